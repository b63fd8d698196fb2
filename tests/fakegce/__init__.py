"""A strict local fake of the Compute Engine REST API, driven by the real client library.

    with FakeCompute(op_latency=0.2) as fake:
        opts = ClientOptions(api_endpoint=fake.endpoint)
        networks = compute_v1.NetworksClient(credentials=AnonymousCredentials(), client_options=opts)

See server.FakeCompute for the knobs, api.ROUTES for the endpoints, filters for `filter`.
"""

from .backing import GeneratedBacking, InstanceBacking
from .server import FakeCompute, Recorded

__all__ = ["FakeCompute", "GeneratedBacking", "InstanceBacking", "Recorded"]
