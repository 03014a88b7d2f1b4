"""The contract's generated protobuf and gRPC stubs (``proto/durable_iterator/v1``).

Made by ``scripts/generate.py``; do not edit. Import the messages as
``from durable_iterator.v1 import durable_iterator_pb2 as pb``.
"""
