import uuid

import pytest

from tests import broker as broker_tools


@pytest.fixture(scope="package")
def _throwaway_node():
    """One throwaway RabbitMQ node for the fault suite's broker tests (starting one takes ~15 s)."""
    if not broker_tools.available():
        pytest.skip("rabbitmq-server is not installed: the throwaway-broker fault tests need it")
    with broker_tools.ThrowawayBroker() as node:
        yield node


@pytest.fixture
def throwaway_broker(_throwaway_node):
    """(node, amqp url of a fresh vhost on it). Tests may stop, start or alarm the node: it is left
    running and alarm-free afterwards."""
    node = _throwaway_node
    node.start()
    vhost = f"faults-{uuid.uuid4().hex[:8]}"
    node.ctl("add_vhost", vhost)
    node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield node, node.url.rstrip("/") + "/" + vhost
    if not node.running:
        node.start()
    node.ctl("set_vm_memory_high_watermark", "0.4", check=False)
    node.ctl("set_disk_free_limit", "50MB", check=False)
    node.ctl("delete_vhost", vhost, check=False)
