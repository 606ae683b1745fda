//! Just enough telnet for `telnet host 9223` to behave: its option negotiation is stripped from
//! the byte stream and politely refused.
//!
//! A telnet client sends commands in-band, introduced by the byte 255 (IAC), which never occurs
//! in UTF-8 text. Pressing Ctrl-C, for instance, sends `IAC IP IAC DO TIMING-MARK`, and the
//! client then discards everything it receives until the server answers the DO. Without an
//! answer the session looks dead. So every `DO` is answered `WONT` and every `WILL` `DONT` (we
//! offer no options), other commands are dropped, and the text around them goes on as usual.
//! Only line connections whose input contains IAC pay for this.

/// "Interpret as command".
pub const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
/// Subnegotiation begin and end.
const SB: u8 = 250;
const SE: u8 = 240;

/// Copies `input` to `data` without telnet commands, and appends the replies they need to
/// `replies`. A command cut off at the end of `input` is dropped.
pub fn filter(input: &[u8], data: &mut Vec<u8>, replies: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        if input[i] != IAC {
            data.push(input[i]);
            i += 1;
            continue;
        }
        match input.get(i + 1).copied() {
            // An escaped 255 is data (and invalid UTF-8, which the protocol then reports).
            Some(IAC) => {
                data.push(IAC);
                i += 2;
            }
            Some(verb @ (DO | DONT | WILL | WONT)) => {
                if let Some(&option) = input.get(i + 2) {
                    match verb {
                        DO => replies.extend_from_slice(&[IAC, WONT, option]),
                        WILL => replies.extend_from_slice(&[IAC, DONT, option]),
                        _ => {}
                    }
                }
                i += 3;
            }
            Some(SB) => {
                // Skip to IAC SE.
                let end = input[i + 2..].windows(2).position(|w| w == [IAC, SE]);
                i = end.map_or(input.len(), |e| i + 2 + e + 2);
            }
            // IP, AO, AYT, EC, EL, GA, NOP, BRK, DM: nothing to do.
            Some(_) => i += 2,
            None => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut data, mut replies) = (Vec::new(), Vec::new());
        filter(input, &mut data, &mut replies);
        (data, replies)
    }

    #[test]
    fn ctrl_c_is_stripped_and_the_timing_mark_refused() {
        // IAC IP IAC DO TIMING-MARK, then a line.
        let (data, replies) = run(b"\xff\xf4\xff\xfd\x06/who\r\n");
        assert_eq!(data, b"/who\r\n");
        assert_eq!(replies, [IAC, WONT, 6]);
    }

    #[test]
    fn will_is_refused_subnegotiation_skipped_escaped_iac_kept() {
        let (data, replies) = run(b"a\xff\xfb\x18b\xff\xfa\x18\x01\xff\xf0c\xff\xffd");
        assert_eq!(data, b"abc\xffd");
        assert_eq!(replies, [IAC, DONT, 0x18]);
        assert_eq!(run(b"x\xff").0, b"x");
    }

    proptest::proptest! {
        /// Any input: no panic, nothing grows beyond the input, and the only replies are
        /// refusals (`IAC WONT x`, `IAC DONT x`), three bytes each.
        #[test]
        fn any_input_is_filtered_into_text_and_refusals(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::sample::select(vec![IAC, DO, DONT, WILL, WONT, SB, SE]),
                ],
                0..300,
            ),
        ) {
            let (data, replies) = run(&input);
            proptest::prop_assert!(data.len() <= input.len());
            proptest::prop_assert_eq!(replies.len() % 3, 0);
            for refusal in replies.chunks(3) {
                proptest::prop_assert_eq!(refusal[0], IAC);
                proptest::prop_assert!(refusal[1] == WONT || refusal[1] == DONT);
            }
            // Input without IAC passes through unchanged.
            if !input.contains(&IAC) {
                proptest::prop_assert_eq!(data, input);
            }
        }
    }
}
