"""A generic asyncio controller-runtime: client, informers, cache, workqueue, manager.

Nothing in this package imports any other part of Kaito; it could run any operator.
"""

from kaito.runtime.cache import Cache, InformerNotFound
from kaito.runtime.client import Client, Preconditions
from kaito.runtime.config import ClientConfig, load_config
from kaito.runtime.controller import Controller, ReconcileTimeout
from kaito.runtime.errors import (
    AlreadyExists,
    ApiError,
    Cause,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from kaito.runtime.events import EventRecorder
from kaito.runtime.gvk import GVK, Resource
from kaito.runtime.handlers import EnqueueForObject, EnqueueForOwner, EnqueueMapped, Handler
from kaito.runtime.indexer import Entry
from kaito.runtime.informer import Informer, InformerEvent
from kaito.runtime.leaderelection import LeaderElection, LeadershipLost
from kaito.runtime.logs import setup_logging
from kaito.runtime.manager import Manager
from kaito.runtime.metrics import Metrics
from kaito.runtime.objects import KObject, Obj, Scheme
from kaito.runtime.predicates import (
    annotations_changed,
    generation_changed,
    labels_changed,
    resource_version_changed,
)
from kaito.runtime.request import Reconciler, Request, Result, TerminalError
from kaito.runtime.selectors import Selector, parse_selector
from kaito.runtime.workqueue import LOW_PRIORITY, WorkQueue

__all__ = [
    "GVK",
    "LOW_PRIORITY",
    "AlreadyExists",
    "ApiError",
    "Cache",
    "Cause",
    "Client",
    "ClientConfig",
    "Conflict",
    "Controller",
    "EnqueueForObject",
    "EnqueueForOwner",
    "EnqueueMapped",
    "Entry",
    "EventRecorder",
    "Forbidden",
    "Gone",
    "Handler",
    "Informer",
    "InformerEvent",
    "InformerNotFound",
    "Invalid",
    "KObject",
    "LeaderElection",
    "LeadershipLost",
    "Manager",
    "Metrics",
    "NotFound",
    "Obj",
    "Preconditions",
    "ReconcileTimeout",
    "Reconciler",
    "Request",
    "Resource",
    "Result",
    "Scheme",
    "Selector",
    "ServerError",
    "TerminalError",
    "TooManyRequests",
    "Unauthorized",
    "WorkQueue",
    "annotations_changed",
    "generation_changed",
    "labels_changed",
    "load_config",
    "parse_selector",
    "resource_version_changed",
    "setup_logging",
]
