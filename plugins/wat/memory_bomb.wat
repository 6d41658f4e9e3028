;; Hostile: grow memory towards 4 GiB, one 64 KiB page at a time, ignoring failures.
(module
  (memory (export "memory") 1)
  (func (export "collect") (result i32)
    (loop $l
      (drop (memory.grow (i32.const 1)))
      (br $l))
    (i32.const 0)))
