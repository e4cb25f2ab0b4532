//! Character classes with Go's `unicode` package semantics, which BuildKit uses to read
//! variable names and to split words. Rust's `is_alphabetic`/`is_numeric` are wider
//! (they include combining vowel signs, letter numbers, superscript digits), which would
//! change where a `$name` ends.

use unicode_general_category::{get_general_category, GeneralCategory};

/// Go `unicode.IsLetter`: general category L*.
pub(crate) fn is_letter(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(ch),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// Go `unicode.IsDigit`: `0`-`9` in Latin-1, general category Nd above it.
pub(crate) fn is_digit(ch: char) -> bool {
    if (ch as u32) <= 0xFF {
        return ch.is_ascii_digit();
    }
    get_general_category(ch) == GeneralCategory::DecimalNumber
}

/// Go `unicode.IsSpace`, which equals the Unicode White_Space property that Rust's
/// `char::is_whitespace` implements (including U+0085 and U+00A0).
pub(crate) fn is_space(ch: char) -> bool {
    ch.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_follow_go_not_rust() {
        assert!(is_letter('a') && is_letter('한') && is_letter('é'));
        // U+0947 DEVANAGARI VOWEL SIGN E is alphabetic for Rust but a mark (Mn) for Go.
        assert!('\u{0947}'.is_alphabetic());
        assert!(!is_letter('\u{0947}'));
        // U+2160 ROMAN NUMERAL ONE is Nl: alphabetic for Rust, not a letter for Go.
        assert!(!is_letter('\u{2160}'));
        assert!(!is_letter('_') && !is_letter('1'));
    }

    #[test]
    fn digits_follow_go_not_rust() {
        assert!(is_digit('0') && is_digit('9'));
        assert!(is_digit('\u{0663}'), "ARABIC-INDIC DIGIT THREE is Nd");
        assert!('\u{00B2}'.is_numeric());
        assert!(!is_digit('\u{00B2}'), "SUPERSCRIPT TWO is No and Latin-1");
        assert!(!is_digit('a'));
    }

    #[test]
    fn spaces_include_latin1_specials() {
        for ch in [
            ' ', '\t', '\n', '\u{0B}', '\u{0C}', '\r', '\u{85}', '\u{A0}', '\u{3000}',
        ] {
            assert!(is_space(ch), "{ch:?}");
        }
        assert!(!is_space('x') && !is_space('\u{200B}'));
    }
}
