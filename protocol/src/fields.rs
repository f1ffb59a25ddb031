//! Reading the `|`-separated fields of one message, byte by byte.
//!
//! Lengths are UTF-8 byte lengths, so the reader works on bytes and only
//! slices the `&str` at positions it has checked are character boundaries.

use super::ParseError;

/// A cursor over the fields that follow a message's two-byte kind.
#[derive(Debug, Clone)]
pub(super) struct Fields<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Fields<'a> {
    /// Starts reading `text` at byte `pos` (just after the kind).
    pub(super) fn new(text: &'a str, pos: usize) -> Self {
        Fields { text, pos }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Consumes the `|` that starts every field.
    fn separator(&mut self) -> Result<(), ParseError> {
        match self.bytes().get(self.pos) {
            Some(b'|') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(ParseError::Malformed("expected '|'")),
            None => Err(ParseError::Malformed("missing field")),
        }
    }

    /// Reads `|<decimal>`: ASCII digits up to the next `|` or the end.
    pub(super) fn number(&mut self) -> Result<u64, ParseError> {
        self.separator()?;
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(&b) = self.bytes().get(self.pos) {
            if b == b'|' {
                break;
            }
            if !b.is_ascii_digit() {
                return Err(ParseError::Malformed("non-digit in number"));
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or(ParseError::Malformed("number overflows"))?;
            self.pos += 1;
        }
        if self.pos == start {
            return Err(ParseError::Malformed("empty number"));
        }
        Ok(value)
    }

    /// Reads `|<byte length>|<bytes>`: a string a third party may edit.
    pub(super) fn string(&mut self) -> Result<&'a str, ParseError> {
        let len = self.number()?;
        self.separator()?;
        let start = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= self.text.len())
            .ok_or(ParseError::Malformed("declared length past the end"))?;
        if !self.text.is_char_boundary(end) {
            return Err(ParseError::Malformed("length splits a UTF-8 character"));
        }
        self.pos = end;
        Ok(&self.text[start..end])
    }

    /// Whether every byte has been read (an extension's fields may follow
    /// the v1 ones).
    pub(super) fn at_end(&self) -> bool {
        self.pos == self.text.len()
    }

    /// Checks that nothing is left after the last field.
    pub(super) fn end(self) -> Result<(), ParseError> {
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(ParseError::Malformed("bytes left after the last field"))
        }
    }
}
