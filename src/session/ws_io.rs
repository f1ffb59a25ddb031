//! The byte stream tungstenite sees: what one socket read brought in, and a
//! vector collecting what tungstenite writes (pongs, close replies).
//!
//! tungstenite parses frames synchronously; feeding it from a slice lets the
//! async session decide when to read the socket. "No more input" is reported
//! as `WouldBlock`, which tungstenite passes up without losing its state.

use std::io::{self, Read, Write};

/// In-memory `Read + Write` over one batch of input.
#[derive(Debug)]
pub struct WsIo<'a> {
    input: &'a [u8],
    /// Everything tungstenite wrote.
    pub output: &'a mut Vec<u8>,
}

impl<'a> WsIo<'a> {
    /// Offers `input` to tungstenite and collects its writes in `output`.
    pub fn new(input: &'a [u8], output: &'a mut Vec<u8>) -> Self {
        WsIo { input, output }
    }
}

impl Read for WsIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.read(buf)?;
        Ok(n)
    }
}

impl Write for WsIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
