;; Hostile: declares 1 GiB of initial memory; refused at instantiation.
(module
  (memory (export "memory") 16384)
  (func (export "collect") (result i32) (i32.const 0)))
