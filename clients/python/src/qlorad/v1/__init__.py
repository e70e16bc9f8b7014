"""The generated protobuf and gRPC stubs of qlorad.v1 (generate.sh writes them; do not edit)."""
