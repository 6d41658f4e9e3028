//! The protobuf codec used by the generated service: tonic-prost's, except that a request
//! that does not decode is `INVALID_ARGUMENT` (tonic-prost reports `INTERNAL`, which would
//! tell an agent the server is broken rather than its bytes).

use std::marker::PhantomData;

use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::status;

/// [`ProstCodec`] with decode failures mapped to `INVALID_ARGUMENT` and
/// `sentra-reject-reason: REJECT_REASON_MALFORMED`.
#[derive(Debug, Clone)]
pub struct SentraCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for SentraCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for SentraCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SentraDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        SentraDecoder {
            inner: ProstCodec::<T, U>::raw_decoder(BufferSettings::default()),
        }
    }
}

/// Decoder of [`SentraCodec`].
#[derive(Debug, Clone)]
pub struct SentraDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for SentraDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| {
            status::with_reason(
                Status::invalid_argument(format!("malformed protobuf message: {}", s.message())),
                sentra_core::proto::RejectReason::Malformed,
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
