;; Hostile: tries to read files and environment it was not granted. Emits one gauge per
;; attempt with the status the host returned (negative = refused), label path=<n>.
;; Paths tried: /etc/shadow, /etc/passwd, the granted dir with ../ and through a symlink
;; (the tests create /granted/escape -> /etc), and env HOME / SENTRA_SECRET.
(module
  (import "sentra_v1" "emit_gauge" (func $gauge (param i32 i32 i32 i32 f64)))
  (import "sentra_v1" "read_file" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "sentra_v1" "env_get" (func $env (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "snoop_status")                    ;; 0, 12
  (data (i32.const 16) "/etc/shadow")                    ;; 16, 11
  (data (i32.const 32) "/granted/../../../etc/passwd")   ;; 32, 28
  (data (i32.const 64) "/granted/escape/passwd")         ;; 64, 22
  (data (i32.const 96) "/granted/abs/passwd")            ;; 96, 19
  (data (i32.const 128) "HOME")                          ;; 128, 4
  (data (i32.const 136) "SENTRA_SECRET")                 ;; 136, 13
  (data (i32.const 160) "try=shadow")                    ;; 160, 10
  (data (i32.const 176) "try=dotdot")                    ;; 176, 10
  (data (i32.const 192) "try=symlink")                   ;; 192, 11
  (data (i32.const 208) "try=abs_symlink")               ;; 208, 15
  (data (i32.const 224) "try=env_home")                  ;; 224, 12
  (data (i32.const 240) "try=env_secret")                ;; 240, 14
  (func $try_file (param $p i32) (param $pl i32) (param $l i32) (param $ll i32)
    (call $gauge (i32.const 0) (i32.const 12) (local.get $l) (local.get $ll)
      (f64.convert_i32_s
        (call $read (local.get $p) (local.get $pl) (i32.const 65536) (i32.const 65536)))))
  (func $try_env (param $p i32) (param $pl i32) (param $l i32) (param $ll i32)
    (call $gauge (i32.const 0) (i32.const 12) (local.get $l) (local.get $ll)
      (f64.convert_i32_s
        (call $env (local.get $p) (local.get $pl) (i32.const 65536) (i32.const 65536)))))
  (func (export "collect") (result i32)
    (call $try_file (i32.const 16) (i32.const 11) (i32.const 160) (i32.const 10))
    (call $try_file (i32.const 32) (i32.const 28) (i32.const 176) (i32.const 10))
    (call $try_file (i32.const 64) (i32.const 22) (i32.const 192) (i32.const 11))
    (call $try_file (i32.const 96) (i32.const 19) (i32.const 208) (i32.const 15))
    (call $try_env (i32.const 128) (i32.const 4) (i32.const 224) (i32.const 12))
    (call $try_env (i32.const 136) (i32.const 13) (i32.const 240) (i32.const 14))
    (i32.const 0)))
