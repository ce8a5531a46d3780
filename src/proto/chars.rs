//! Character classes: which characters show nothing, or change how the
//! text around them is laid out. Requests use them to refuse a message
//! that shows nothing; the text spelling shows them as code points.

/// True for a character that shows nothing yet changes what a terminal
/// shows around it or hides text: Unicode's default-ignorable code points,
/// which include the bidi embeddings, overrides, isolates and marks
/// (U+202A–E, U+2066–9, U+200E, U+200F, U+061C), the zero-width characters
/// (U+200B–D, U+2060, U+FEFF), the soft hyphen, variation selectors, the
/// Hangul fillers and the tag characters (U+E0000–E007F).
pub(super) fn is_invisible(ch: char) -> bool {
    matches!(
        ch,
        '\u{ad}'
            | '\u{34f}'
            | '\u{61c}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{ffa0}'
            | '\u{fff0}'..='\u{fffb}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

/// True for a format control that is not default-ignorable but still
/// changes how the text around it is laid out (Unicode category Cf): the
/// prepended concatenation marks (U+0600–5, U+06DD, U+070F, U+0890–1,
/// U+08E2, U+110BD, U+110CD) span the characters after them, and the
/// Egyptian hieroglyph format controls (U+13430–1345F) stack them.
pub(super) fn is_format_control(ch: char) -> bool {
    matches!(
        ch,
        '\u{600}'..='\u{605}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1345f}'
    )
}
