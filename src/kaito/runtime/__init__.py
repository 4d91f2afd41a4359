"""A generic asyncio controller-runtime: client, informers, cache, workqueue, manager.

Nothing in this package imports any other part of Kaito; it could run any operator.
"""
