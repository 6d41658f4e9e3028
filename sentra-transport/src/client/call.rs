//! The innermost client service: one gRPC call on the channel.

use std::{
    marker::PhantomData,
    task::{Context, Poll},
    time::Duration,
};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
use sentra_core::proto::{Ack, DesiredState, SignedBatch};
use tonic::transport::Channel;
use tower_service::Service;

use crate::{BoxError, pb::ingest_client::IngestClient};

/// Calls one method; `R` selects which by its response type.
pub(crate) struct GrpcCall<R> {
    client: IngestClient<Channel>,
    timeout: Duration,
    _r: PhantomData<fn() -> R>,
}

impl<R> Clone for GrpcCall<R> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            timeout: self.timeout,
            _r: PhantomData,
        }
    }
}

impl<R> GrpcCall<R> {
    pub(crate) fn new(client: IngestClient<Channel>, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            _r: PhantomData,
        }
    }
}

macro_rules! grpc_call {
    ($resp:ty, $method:ident) => {
        impl Service<tonic::Request<SignedBatch>> for GrpcCall<$resp> {
            type Response = $resp;
            type Error = BoxError;
            type Future = BoxFuture<'static, Result<$resp, BoxError>>;

            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                // tonic's unary call waits for the channel itself.
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, mut req: tonic::Request<SignedBatch>) -> Self::Future {
                let mut client = self.client.clone();
                req.set_timeout(self.timeout);
                Box::pin(async move {
                    client
                        .$method(req)
                        .await
                        .map(tonic::Response::into_inner)
                        .map_err(|s| Box::new(s) as BoxError)
                })
            }
        }
    };
}

grpc_call!(Ack, push);
grpc_call!(DesiredState, fetch_desired_state);
