"""The console's device page shows the device's last run over SSH: its steps, status and messages."""

from __future__ import annotations

from roost.hub.contract.provision import RegistrationStatus, Step, StepStatus
from tests.hub.conftest import HubServer, enroll_device
from tests.hub.test_console import browser, sign_in


def test_the_device_page_shows_the_provisioning_steps(hub_server: HubServer) -> None:
    enroll_device(hub_server, "edge-ssh")
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        assert "Provisioned over SSH" not in client.get("/console/devices/edge-ssh").text  # enrolled by hand
    store = hub_server.store
    run = store.create_registration("edge-ssh", "upgrade", "pi@10.0.0.2:2222", False,
                                    [Step(name="connect", status=StepStatus.OK, seconds=0.2),
                                     Step(name="install roost", status=StepStatus.FAILED, seconds=3.0,
                                          message="step install roost on pi@10.0.0.2:2222 failed: <no index>")])
    store.update_registration(run.id, status=RegistrationStatus.FAILED, error_code="PROVISION_STEP_FAILED",
                              host_key_fingerprint="SHA256:abc")
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        page = client.get("/console/devices/edge-ssh").text
    assert "Provisioned over SSH" in page and "pi@10.0.0.2:2222" in page and "SHA256:abc" in page
    assert 'id="provision-steps"' in page and "install roost" in page and "PROVISION_STEP_FAILED" in page
    assert "&lt;no index&gt;" in page and "<no index>" not in page  # escaped
