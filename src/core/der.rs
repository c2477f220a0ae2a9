//! The few bytes of DER that the broker reads itself: the front element of a buffer.
//!
//! Two places look inside X.509 certificates without a certificate parser: the dev TLS
//! certificate's `notAfter` (`rpc::tls::dev`) and the signature algorithm that PostgreSQL's
//! channel binding hashes with (`store::postgres_tls`). Both walk a certificate already in
//! hand, element by element; this is the one walker they share.

/// One DER element at the front of `input`: (tag, contents, what follows). Definite
/// lengths of at most 4 bytes only (a certificate is far smaller); `None` for anything
/// else, or when `input` ends early.
pub fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_read_off_the_front_or_refused() {
        let long = [&[0x04, 0x81, 0x80][..], &[7u8; 0x80], &[0xff]].concat();
        type Element<'a> = (u8, &'a [u8], &'a [u8]);
        let cases: [(&[u8], Option<Element>); 8] = [
            (&[0x30, 0x00], Some((0x30, &[], &[]))),
            (&[0x02, 0x01, 0x05, 0xaa], Some((0x02, &[0x05], &[0xaa]))),
            (&long, Some((0x04, &[7u8; 0x80], &[0xff]))),
            (&[], None),
            (&[0x30], None),
            (&[0x30, 0x02, 0x00], None),             // ends early
            (&[0x30, 0x80, 0x00, 0x00], None),       // indefinite length
            (&[0x30, 0x85, 0, 0, 0, 0, 1, 0], None), // 5 length bytes
        ];
        for (input, want) in cases {
            assert_eq!(element(input), want, "{input:02x?}");
        }
    }
}
