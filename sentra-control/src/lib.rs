#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "postgres")]
pub mod alert_lease;
pub mod backend;
mod desired;
mod error;
#[cfg(feature = "grpc")]
mod grpc;
mod keyring;
pub mod onboard;
mod password;
mod replay;
mod secret;
mod store;
mod token;
mod util;

#[cfg(feature = "sqlite")]
pub use backend::sqlite::CONTROL_DB_FILE;
pub use desired::{
    MAX_ALLOWED_IPS_PER_PEER, MAX_PEERS_PER_INTERFACE, PeerSpec, check_interface, normalise,
};
pub use error::{BoxError, Error, Result};
#[cfg(feature = "grpc")]
pub use grpc::DesiredStateService;
pub use keyring::DbKeyring;
pub use password::{PasswordCost, Role};
pub use replay::ReplayGuard;
pub use secret::{Password, SecretString};
pub use store::{
    Actor, AgentInfo, AuditEntry, AuditQuery, BOOTSTRAP_TOKEN_PREFIX, BootstrapTokenInfo,
    ControlStore, DesiredInfo, DesiredInterfaceInfo, Enrolment, IssuedBootstrapToken, KeyInfo,
    MAX_BOOTSTRAP_TOKEN_TTL, NewPeer, NewestKey, Onboarded, Rotation, StoreOptions, TokenSubject,
    User, UserUpdate, check_username,
};
pub use token::{Claims, IssuedAccessToken, JWT_LEEWAY, MAX_ACCESS_TOKEN_TTL, Tokens};
