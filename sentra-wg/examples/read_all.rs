//! Read every WireGuard interface on this host and print it like `wg show`.
//!
//! ```text
//! sudo cargo run -p sentra-wg --example read_all
//! ```
//!
//! Needs Linux with the WireGuard module and `CAP_NET_ADMIN`. Without them it says
//! "WireGuard not available" and exits successfully, which is what a collector should do too.

use std::time::SystemTime;

use sentra_wg::{blocking::Client, show};

fn main() -> Result<(), sentra_wg::Error> {
    let devices = match Client::connect().and_then(|client| {
        client.probe()?; // resolves the `wireguard` netlink family: is the module there?
        let devices = client.devices()?;
        let names = client.link_names()?;
        Ok((devices, names))
    }) {
        Ok(found) => found,
        Err(e) if e.is_unavailable() => {
            println!("WireGuard not available: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let (devices, names) = devices;
    // Without CAP_NET_ADMIN the kernel refuses the dump of an existing device
    // (`is_unavailable` above); with no WireGuard device there is nothing to dump.
    if devices.is_empty() {
        println!("no WireGuard interfaces");
    }
    for device in &devices {
        print!(
            "{}",
            show::pretty_named(device, SystemTime::now(), show::Secrets::Hide, &names)
        );
        println!();
    }
    Ok(())
}
