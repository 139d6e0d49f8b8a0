"""Building the paho-mqtt 2.x client from a BrokerConfig: protocol, session, TLS, credentials.

Also holds one fix to paho 2.2 itself: after a reconnect it resends *every* unacknowledged
QoS 1 publication at once (`_messages_reconnect_reset_out` compares against the in-flight
limit but never counts, so all are marked for sending). `_Client` requeues all but the first
`max_inflight_messages`; paho's own PUBACK handling (`_update_inflight`) sends the rest as
acknowledgements arrive. tests/mqtt/test_bus.py checks the resend stays within the limit.
"""

from __future__ import annotations

import logging
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_config.errors import ConfigError
from edge_config.schema import BrokerConfig, TLSConfig

__all__ = ["broker_password", "make_client", "tls_context"]

log = logging.getLogger("edgewatch.bus")


class _Client(mqtt.Client):
    def _messages_reconnect_reset_out(self) -> None:
        super()._messages_reconnect_reset_out()
        if self._max_inflight_messages <= 0:
            return
        with self._out_message_mutex:
            resend = 0
            for message in self._out_messages.values():  # insertion order = publication order
                if message.qos > 0 and message.state in (mqtt.mqtt_ms_publish, mqtt.mqtt_ms_resend_pubrel):
                    if resend < self._max_inflight_messages:
                        resend += 1
                    elif message.state == mqtt.mqtt_ms_publish:
                        message.state = mqtt.mqtt_ms_queued


def broker_password(broker: BrokerConfig) -> str | None:
    """The password from the config (environment/secrets already merged by loading) or password_file."""
    if broker.password is not None:
        return broker.password.get_secret_value()
    if broker.password_file is not None:
        try:
            return broker.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"broker.password_file {broker.password_file}: {exc.strerror or exc}") from None
    return None


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """A client context that verifies the broker unless insecure_skip_verify (warned at every start)."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"broker.tls: cannot load certificates: {exc}") from None
    if tls.insecure_skip_verify:
        log.warning("broker.tls.insecure_skip_verify is set: the broker's certificate and name are NOT checked")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def make_client(broker: BrokerConfig, client_id: str, *, manual_ack: bool, max_inflight: int = 20) -> mqtt.Client:
    """A configured, not yet connected client (MQTT 5 or 3.1.1, TLS and credentials from the config)."""
    if broker.protocol == "5":
        client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    else:
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=broker.session_expiry_s == 0,
            manual_ack=manual_ack,
        )
    paho_log = logging.getLogger("edgewatch.paho")
    if paho_log.isEnabledFor(logging.DEBUG):  # paho logs every failed retry at ERROR: only for -v
        client.enable_logger(paho_log)
    client.max_inflight_messages_set(max_inflight)
    # paho annotates ints, but only compares and doubles them: sub-second delays work.
    client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)  # type: ignore[arg-type]
    if broker.username is not None:
        client.username_pw_set(broker.username, broker_password(broker))
    if broker.tls is not None:
        client.tls_set_context(tls_context(broker.tls))
    return client
