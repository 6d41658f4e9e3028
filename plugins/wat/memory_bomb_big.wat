;; Hostile: one memory.grow of 65535 pages (4 GiB).
(module
  (memory (export "memory") 1)
  (func (export "collect") (result i32)
    (drop (memory.grow (i32.const 65535)))
    (i32.const 0)))
