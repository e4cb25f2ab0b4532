//! `--chmod` values of COPY and ADD: octal (`0755`) or, as BuildKit accepts since
//! Dockerfile 1.14, symbolic (`u+x,g-w`, `a=rX`, `go=u-w`) with chmod(1)'s meaning. The
//! symbolic form follows BSD `setmode(3)` with a zero umask (BuildKit's `dchapes-mode`):
//! an omitted "who" means everybody, `X` adds execute only to directories and to files
//! that already have an execute bit, and `u`/`g`/`o` as permissions copy another class.

use std::fmt;

const IS_UID: u32 = 0o4000;
const IS_GID: u32 = 0o2000;
const IS_TXT: u32 = 0o1000;
const RWXU: u32 = 0o700;
const RWXG: u32 = 0o070;
const RWXO: u32 = 0o007;
const R_ALL: u32 = 0o444;
const W_ALL: u32 = 0o222;
const X_ALL: u32 = 0o111;
const STANDARD: u32 = IS_UID | IS_GID | RWXU | RWXG | RWXO;

/// At most this many primitive operations in one symbolic mode (each clause makes one to
/// three); keeps [`Chmod`] `Copy`.
const MAX_OPS: usize = 24;

/// Copy another class's bits: which classes receive them.
const TO_U: u8 = 1;
const TO_G: u8 = 2;
const TO_O: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Set `bits`.
    Add(u32),
    /// Clear `bits`.
    Clear(u32),
    /// Set `bits` when the original mode has an execute bit or is a directory.
    AddX(u32),
    /// Copy the permissions of class `from` (`b'u'`, `b'g'`, `b'o'`) to the classes in
    /// `to`, limited to `mask`; `clear` first clears them, `set` then sets them.
    CopyClass {
        from: u8,
        to: u8,
        mask: u32,
        clear: bool,
        set: bool,
    },
}

/// A parsed `--chmod`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chmod {
    Octal(u32),
    Symbolic { ops: [Option<Op>; MAX_OPS] },
}

impl fmt::Debug for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "Chmod({m:o})"),
            Chmod::Symbolic { ops } => f.debug_list().entries(ops.iter().flatten()).finish(),
        }
    }
}

/// Why a `--chmod` value is refused (BuildKit's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    /// Starts with a digit but is not an octal mode up to 07777.
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    NotOctal(String),
    /// Not a symbolic mode `chmod(1)` (BSD `setmode`) accepts.
    #[error("invalid chmod parameter: '{text}': {reason}")]
    Symbolic { text: String, reason: &'static str },
}

impl Chmod {
    /// Parses a `--chmod` value; errors read as BuildKit's.
    pub(crate) fn parse(text: &str) -> Result<Chmod, ChmodError> {
        if text.starts_with(|c: char| c.is_ascii_digit()) {
            return match u32::from_str_radix(text, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(ChmodError::NotOctal(text.to_string())),
            };
        }
        parse_symbolic(text)
            .map_err(|reason| ChmodError::Symbolic {
                text: text.to_string(),
                reason,
            })
            .map(|ops| Chmod::Symbolic { ops })
    }

    /// The permission bits (with setuid/setgid/sticky) an entry whose bits were `old`
    /// gets.
    pub(crate) fn apply(&self, old: u32, is_dir: bool) -> u32 {
        let ops = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic { ops } => ops,
        };
        let old = old & 0o7777;
        let mut mode = old;
        for op in ops.iter().flatten() {
            match *op {
                Op::Add(bits) => mode |= bits,
                Op::Clear(bits) => mode &= !bits,
                Op::AddX(bits) => {
                    if old & X_ALL != 0 || is_dir {
                        mode |= bits;
                    }
                }
                Op::CopyClass {
                    from,
                    to,
                    mask,
                    clear,
                    set,
                } => {
                    let value = match from {
                        b'u' => (mode & RWXU) >> 6,
                        b'g' => (mode & RWXG) >> 3,
                        _ => mode & RWXO,
                    };
                    let shifts = [(TO_U, 6), (TO_G, 3), (TO_O, 0)];
                    if clear {
                        // `=` clears the whole class, `-` only what is being copied.
                        let clr = if set { RWXO } else { value };
                        for (class, shift) in shifts {
                            if to & class != 0 {
                                mode &= !((clr << shift) & mask);
                            }
                        }
                    }
                    if set {
                        for (class, shift) in shifts {
                            if to & class != 0 {
                                mode |= (value << shift) & mask;
                            }
                        }
                    }
                }
            }
        }
        mode
    }

    /// The mode of destination directories a COPY creates: BuildKit uses an octal
    /// `--chmod` for them too (fsutil's `MkdirAll(dest, mode)`), and 0755 otherwise.
    pub(crate) fn created_dir_mode(chmod: Option<&Chmod>) -> u32 {
        match chmod {
            Some(Chmod::Octal(m)) => *m,
            _ => 0o755,
        }
    }
}

struct OpList {
    ops: [Option<Op>; MAX_OPS],
    len: usize,
}

impl OpList {
    fn push(&mut self, op: Op) -> Result<(), &'static str> {
        if self.len == MAX_OPS {
            return Err("too many clauses");
        }
        self.ops[self.len] = Some(op);
        self.len += 1;
        Ok(())
    }

    /// BSD `addcmd` for `+`, `-`, `=` and `X`.
    fn bits(&mut self, op: u8, who: u32, perm: u32) -> Result<(), &'static str> {
        let masked = |p: u32| if who != 0 { who & p } else { p };
        match op {
            b'=' => {
                self.push(Op::Clear(if who != 0 { who } else { STANDARD }))?;
                self.push(Op::Add(masked(perm)))
            }
            b'+' => self.push(Op::Add(masked(perm))),
            b'-' => self.push(Op::Clear(masked(perm))),
            _ => self.push(Op::AddX(masked(perm))),
        }
    }

    /// BSD `addcmd` for a class copy (`g=u`).
    fn copy(&mut self, op: u8, who: u32, from: u8) -> Result<(), &'static str> {
        let (to, mask) = if who != 0 {
            let mut to = 0;
            if who & 0o400 != 0 {
                to |= TO_U;
            }
            if who & 0o040 != 0 {
                to |= TO_G;
            }
            if who & 0o004 != 0 {
                to |= TO_O;
            }
            (to, u32::MAX)
        } else {
            (TO_U | TO_G | TO_O, u32::MAX)
        };
        self.push(Op::CopyClass {
            from,
            to,
            mask,
            clear: op != b'+',
            set: op != b'-',
        })
    }
}

/// BSD `setmode`'s parser (zero umask).
fn parse_symbolic(text: &str) -> Result<[Option<Op>; MAX_OPS], &'static str> {
    let syntax = || "invalid syntax";
    let s = text.as_bytes();
    if s.is_empty() {
        return Err(syntax());
    }
    let mut list = OpList {
        ops: [None; MAX_OPS],
        len: 0,
    };
    let mut i = 0;
    let mut equal_done = false;
    loop {
        let mut who = 0u32;
        loop {
            match s.get(i) {
                None => return Err(syntax()),
                Some(b'a') => who |= STANDARD,
                Some(b'u') => who |= IS_UID | RWXU,
                Some(b'g') => who |= IS_GID | RWXG,
                Some(b'o') => who |= RWXO,
                Some(_) => break,
            }
            i += 1;
        }
        loop {
            // One operator and its permissions.
            let op = *s.get(i).ok_or_else(syntax)?;
            i += 1;
            match op {
                b'+' | b'-' => {}
                b'=' => equal_done = false,
                _ => return Err(syntax()),
            }
            who &= !IS_TXT;
            let mut perm = 0u32;
            let mut perm_x = 0u32;
            loop {
                let b = s.get(i).copied().unwrap_or(0);
                match b {
                    b'r' => perm |= R_ALL,
                    b's' => {
                        if who == 0 || who & !RWXO != 0 {
                            perm |= IS_UID | IS_GID;
                        }
                    }
                    b't' => {
                        if who == 0 || who & !RWXO != 0 {
                            who |= IS_TXT;
                            perm |= IS_TXT;
                        }
                    }
                    b'w' => perm |= W_ALL,
                    b'X' => {
                        if op != b'-' {
                            perm_x = X_ALL;
                        } else {
                            perm |= X_ALL;
                        }
                    }
                    b'x' => perm |= X_ALL,
                    b'u' | b'g' | b'o' => {
                        if perm != 0 {
                            list.bits(op, who, perm)?;
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x != 0 {
                            list.bits(b'X', who, perm_x)?;
                            perm_x = 0;
                        }
                        list.copy(op, who, b)?;
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            if op == b'=' {
                                equal_done = true;
                            }
                            list.bits(op, who, perm)?;
                        }
                        if perm_x != 0 {
                            list.bits(b'X', who, perm_x)?;
                        }
                        break;
                    }
                }
                i += 1;
            }
            match s.get(i) {
                None => return Ok(list.ops),
                Some(b',') => {
                    i += 1;
                    break;
                }
                Some(_) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(text: &str, old: u32, is_dir: bool) -> u32 {
        Chmod::parse(text).unwrap().apply(old, is_dir)
    }

    #[test]
    fn octal() {
        assert_eq!(sym("755", 0o600, false), 0o755);
        assert_eq!(sym("04755", 0o600, false), 0o4755);
        assert_eq!(
            Chmod::parse("0999").unwrap_err(),
            ChmodError::NotOctal("0999".into())
        );
        assert!(Chmod::parse("0999")
            .unwrap_err()
            .to_string()
            .contains("it should be octal string and between 0 and 07777"));
        assert!(Chmod::parse("17777").is_err());
    }

    #[test]
    fn symbolic_table() {
        // Checked against GNU chmod(1) with umask 0, except `o+t`: BSD setmode (and so
        // BuildKit) ignores `t` for `o` alone, GNU sets it.
        assert_eq!(sym("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(sym("a=rX", 0o640, false), 0o444);
        assert_eq!(sym("a=rX", 0o740, false), 0o555);
        assert_eq!(sym("a=rX", 0o700, true), 0o555);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("go=", 0o777, false), 0o700);
        assert_eq!(sym("g=u", 0o640, false), 0o660);
        assert_eq!(sym("go=u-w", 0o750, false), 0o755);
        assert_eq!(sym("o+t", 0o755, true), 0o755);
        assert_eq!(sym("+t", 0o755, true), 0o1755);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g+s", 0o755, true), 0o2755);
        assert_eq!(sym("u=rw,go=r", 0o4777, false), 0o644);
        assert_eq!(sym("u+rwx,o-rwx", 0o044, false), 0o740);
    }

    #[test]
    fn symbolic_errors() {
        for bad in ["u+z", "u", "x+", "u+x,", "+x,,", "q=r"] {
            let err = Chmod::parse(bad).unwrap_err();
            assert!(
                matches!(&err, ChmodError::Symbolic { text, .. } if text == bad),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains("invalid syntax"), "{bad}: {err}");
        }
    }
}
