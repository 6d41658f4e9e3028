//! Onboards a WireGuard client without a server: an address from a pool, a fresh key
//! pair, the wg-quick file and its QR code (terminal, and a PNG when a path is given).
//!
//! ```text
//! cargo run -p sentra-control --example onboard -- [client.png]
//! ```
//!
//! The file holds a private key generated for this run only: it is printed because this
//! is a demonstration; a server returns it once to the operator and never logs it.

use sentra_control::{
    PeerSpec,
    onboard::{AddressPool, ClientConfig, KeyPair, Tunnel, qr_png, qr_terminal},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = AddressPool::parse(["10.8.0.0/24", "fd00:8::/64"])?;
    // One peer already declared on the interface; the interface itself is .1 / ::1.
    let declared = [
        PeerSpec::new("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
            .with_allowed_ips(["10.8.0.2/32", "fd00:8::2/128"]),
    ];
    let own = ["10.8.0.1".parse()?, "fd00:8::1".parse()?];
    let addresses = pool.next_free(&declared, &own)?;
    let pair = KeyPair::generate()?;
    eprintln!("client public key: {}", pair.public_key);
    let server = KeyPair::generate()?;
    let mut cfg = ClientConfig::new(
        Some(pair.private_key),
        addresses,
        server.public_key,
        "192.0.2.1:51820",
    );
    cfg.dns = vec!["10.8.0.1".parse()?];
    cfg.tunnel = Tunnel::Split(vec!["10.8.0.0/24".into(), "fd00:8::/64".into()]);
    cfg.persistent_keepalive_s = 25;
    let text = cfg.render();
    println!("{}", text.expose_secret());
    println!("{}", qr_terminal(&text)?.expose_secret());
    if let Some(path) = std::env::args_os().nth(1) {
        std::fs::write(&path, &*qr_png(&text, 6)?)?;
        eprintln!("PNG written to {}", std::path::Path::new(&path).display());
    }
    Ok(())
}
