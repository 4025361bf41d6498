"""TF Serving's MonitoringConfig and SSLConfig messages, which the tensorflow-serving-api wheel does not ship.

Why it exists: ``--monitoring_config_file`` and ``--ssl_config_file`` hold text protos of
tensorflow_serving/config/monitoring_config.proto and ssl_config.proto. Those two small messages are declared
here, field for field (same package, names and numbers), in a private descriptor pool, so the files parse exactly
as tensorflow_model_server parses them.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto
_POOL = descriptor_pool.DescriptorPool()


def _file(name: str, messages: dict[str, list[tuple[str, int, int, str]]]) -> None:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package="tensorflow.serving", syntax="proto3")
    for message_name, fields in messages.items():
        message = proto.message_type.add(name=message_name)
        for field_name, number, kind, type_name in fields:
            message.field.add(name=field_name, number=number, type=kind, label=_FIELD.LABEL_OPTIONAL,
                              type_name=type_name or None)
    _POOL.Add(proto)


_file("tensorflow_serving/config/monitoring_config.proto", {
    "PrometheusConfig": [("enable", 1, _FIELD.TYPE_BOOL, ""), ("path", 2, _FIELD.TYPE_STRING, "")],
    "MonitoringConfig": [("prometheus_config", 1, _FIELD.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")],
})
_file("tensorflow_serving/config/ssl_config.proto", {
    "SSLConfig": [("server_key", 1, _FIELD.TYPE_STRING, ""), ("server_cert", 2, _FIELD.TYPE_STRING, ""),
                  ("custom_ca", 3, _FIELD.TYPE_STRING, ""), ("client_verify", 4, _FIELD.TYPE_BOOL, "")],
})

MonitoringConfig = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))
SSLConfig = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.serving.SSLConfig"))
