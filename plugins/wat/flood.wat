;; Hostile: emits samples forever (one million and more).
(module
  (import "sentra_v1" "emit_gauge" (func $gauge (param i32 i32 i32 i32 f64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "flood")
  (func (export "collect") (result i32)
    (loop $l
      (call $gauge (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (f64.const 1))
      (br $l))
    (i32.const 0)))
