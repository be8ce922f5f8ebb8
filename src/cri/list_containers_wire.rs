//! ListContainers on the wire without building its messages.
//!
//! kubelet lists every container about once a second. With 1000 containers, building the
//! `ListContainersResponse` (every string of every record copied into fresh messages,
//! encoded, then freed) took ~4 ms of the daemon's CPU per call (perf:
//! docs/benchmarks.md, "ListContainers, encoded once per container"). Each container's
//! entry is encoded once instead (`list_containers::entry_parts`) and an answer is those
//! bytes with each one's current state (`list_containers::encode_answer`).
//!
//! [`EncodedList`] sits in front of the generated `RuntimeServiceServer`: it answers that
//! one method itself, through tonic's own gRPC machinery (framing, status, message size
//! limits) with a codec whose encoder writes the bytes as they are; every other call goes
//! to the generated service unchanged.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use k8s_cri::v1::{ListContainersRequest, ListContainersResponse};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::daemon::Daemon;

const PATH: &str = "/runtime.v1.RuntimeService/ListContainers";

/// The runtime service `S` (the generated server) with ListContainers answered from the
/// encoded entries.
#[derive(Clone)]
pub struct EncodedList<S> {
    inner: S,
    daemon: Arc<Daemon>,
    max_message: usize,
}

impl<S> EncodedList<S> {
    /// `max_message`: the encoding and decoding limits `inner` was given.
    pub fn new(inner: S, daemon: Arc<Daemon>, max_message: usize) -> Self {
        EncodedList {
            inner,
            daemon,
            max_message,
        }
    }
}

impl<S: NamedService> NamedService for EncodedList<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<tonic::body::Body>> for EncodedList<S>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != PATH {
            let fut = self.inner.call(req);
            return Box::pin(fut);
        }
        let (daemon, max) = (self.daemon.clone(), self.max_message);
        Box::pin(async move {
            let mut grpc = Grpc::new(ListCodec).apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.unary(List(daemon), req).await)
        })
    }
}

struct List(Arc<Daemon>);

impl UnaryService<ListContainersRequest> for List {
    type Response = Encoded;
    type Future = BoxFuture<Response<Encoded>, Status>;

    fn call(&mut self, request: Request<ListContainersRequest>) -> Self::Future {
        let bytes = super::list_containers::list_containers_encoded(&self.0, request.into_inner());
        Box::pin(async move { Ok(Response::new(Encoded(bytes))) })
    }
}

/// A `ListContainersResponse` already encoded.
pub struct Encoded(Vec<u8>);

/// Requests decoded by prost as the generated service does; answers written as they are.
struct ListCodec;

impl Codec for ListCodec {
    type Encode = Encoded;
    type Decode = ListContainersRequest;
    type Encoder = EncodedEncoder;
    type Decoder = tonic_prost::ProstDecoder<ListContainersRequest>;

    fn encoder(&mut self) -> EncodedEncoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<ListContainersResponse, ListContainersRequest>::default()
            .decoder()
    }
}

struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item.0);
        Ok(())
    }
}
