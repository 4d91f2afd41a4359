"""Fine-tuning stages of a tuning Workspace's Job: download the data, train a peft adapter, push it.

Each stage is a ``python -m serving.tuning.<stage>`` command in its own container. Like the rest
of ``serving/`` this ships in the serving image and imports nothing from the operator.
"""
