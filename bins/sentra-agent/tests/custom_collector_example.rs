//! Runs `examples/custom_collector.rs` as a test: its `main` succeeds only once three
//! batches carrying the custom collector's samples were verified by the real server it
//! starts (it gives up with an error after 30 s per batch).

#[path = "../examples/custom_collector.rs"]
mod example;

#[test]
fn the_custom_collector_example_ships_its_samples() {
    example::main().expect("the example's samples reached the server");
}
