"""The ``azure`` node backend: NodeRequest → AKS agent pool through the real Azure SDK.

Operator flags (with ``--node-provisioner=azure``), each also read from the environment:

==========================  ===========================================  =========
flag                        environment                                  required
==========================  ===========================================  =========
--azure-subscription-id     AZURE_SUBSCRIPTION_ID (ARM_SUBSCRIPTION_ID)  yes
--azure-resource-group      AZURE_RESOURCE_GROUP (ARM_RESOURCE_GROUP)    yes
--azure-cluster-name        AZURE_CLUSTER_NAME                           yes
--azure-location            AZURE_LOCATION (LOCATION)                    yes
--azure-arm-endpoint        AZURE_ARM_ENDPOINT                           no
--azure-ca-bundle           AZURE_CA_BUNDLE                              no
==========================  ===========================================  =========

The credential is ``DefaultAzureCredential``: workload identity (``AZURE_CLIENT_ID``,
``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE``), managed identity, or a client secret
(``AZURE_CLIENT_SECRET``); ``AZURE_AUTHORITY_HOST`` points it at another token authority.
"""

from kaito.provisioner.azure.errors import Classified, classify, classify_codes
from kaito.provisioner.azure.mapping import InvalidRequest, PoolSpec, build_pool
from kaito.provisioner.azure.naming import AzureProviderID, parse_provider_id, pool_name
from kaito.provisioner.azure.provisioner import AzureProvisioner, BoundedRetryPolicy
from kaito.provisioner.azure.settings import AzureSettings

__all__ = [
    "AzureProviderID",
    "AzureProvisioner",
    "AzureSettings",
    "BoundedRetryPolicy",
    "Classified",
    "InvalidRequest",
    "PoolSpec",
    "build_pool",
    "classify",
    "classify_codes",
    "parse_provider_id",
    "pool_name",
]
