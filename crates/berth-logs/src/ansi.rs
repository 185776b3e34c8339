//! ANSI escape sequences (colours, cursor moves) out of a line before it is
//! parsed and stored: Shuttle's default `tracing` subscriber, and many
//! others on a terminal, colour every level name. The line as written is
//! kept beside the plain one, to show in colour on a terminal.

use std::borrow::Cow;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';

/// `text` without its escape sequences (CSI such as `ESC[1;31m`, OSC such
/// as a terminal title or hyperlink, and two-character escapes).
pub fn strip_ansi(text: &str) -> Cow<'_, str> {
    if !text.contains(ESC) {
        return Cow::Borrowed(text);
    }
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ESC {
            plain.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates, then one final byte @ to ~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \ (the string terminator).
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == BEL {
                        break;
                    }
                    if c == ESC {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            // A two-character escape (ESC c, ESC =, …), or a lone ESC.
            Some(_) | None => {}
        }
    }
    Cow::Owned(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_titles_and_links_go_and_the_text_stays() {
        let shuttle = "\u{1b}[2m2026-12-07T10:00:00.000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mhello\u{1b}[0m\u{1b}[2m:\u{1b}[0m started";
        assert_eq!(
            strip_ansi(shuttle),
            "2026-12-07T10:00:00.000Z  INFO hello: started"
        );
        assert_eq!(
            strip_ansi("\u{1b}]0;title\u{7}a \u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\ b"),
            "a link b"
        );
        assert_eq!(
            strip_ansi("\u{1b}=keypad \u{1b}[?25lhidden"),
            "keypad hidden"
        );
        assert!(matches!(strip_ansi("plain"), Cow::Borrowed("plain")));
        // A cut sequence at the end loses only itself.
        assert_eq!(strip_ansi("text\u{1b}[3"), "text");
    }
}
