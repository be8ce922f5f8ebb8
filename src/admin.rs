//! proxrt's own gRPC service (proto/proxrt/v1/admin.proto), served beside CRI.

#![allow(clippy::all)]
tonic::include_proto!("proxrt.v1");
