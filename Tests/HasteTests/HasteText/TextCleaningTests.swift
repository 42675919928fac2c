@testable import HasteText
import Testing

/// The text cleaning pieces without the vocabulary (these run offline). Expected values are Python's
/// (`str.lower`, `ftfy.fix_text` 6.1.1, `regex.findall` of CLIP's pattern), written out by hand.
private func scalars(_ s: String) -> [Unicode.Scalar] { Array(s.unicodeScalars) }
private func string(_ s: [Unicode.Scalar]) -> String { String(String.UnicodeScalarView(s)) }
private func fixed(_ s: String) -> String { string(TextFixer.fixText(scalars(s))) }

@Test func lowerFollowsPython() {
    #expect(string(PythonText.lower(scalars("ΟΔΟΣ ΣΟΦΟΣ Σ"))) == "οδος σοφος σ")
    #expect(PythonText.lower(scalars("İ")).map(\.value) == [0x69, 0x307])
    #expect(string(PythonText.lower(scalars("ẞ ǅ ABC"))) == "ß ǆ abc")
}

@Test func whitespaceCleanUsesPythonsSpaces() {
    #expect(string(PythonText.whitespaceClean(scalars(" a\t\u{3000}b\u{1C}c\u{200B}d  "))) == "a b c\u{200B}d")
}

@Test func preTokenizerFollowsTheRegexModule() {
    func words(_ s: String) -> [String] {
        let t = scalars(s)
        return PreTokenizer.split(t).map { piece -> String in
            switch piece {
            case .special(let id): return "#\(id)"
            case .text(let r): return string(Array(t[r]))
            }
        }
    }
    #expect(words("it's a dog's 'll life!!") == ["it", "'s", "a", "dog", "'s", "'ll", "life", "!!"])
    #expect(words("it'ſ 12ab") == ["it", "'ſ", "1", "2", "ab"])
    #expect(words("a<|endoftext|>b <|ſtartoftext|>") == ["a", "#49407", "b", "<|ſtartoftext|>"])
    #expect(words("α\u{345}!\u{345}") == ["α", "!"])
}

@Test func fixTextRepairsWhatFtfyRepairs() {
    #expect(fixed("cafÃ© and naÃ¯ve") == "café and naïve")
    #expect(fixed("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.") == "The Mona Lisa doesn't have eyebrows.")
    #expect(fixed("â€œQuoteâ€\u{9D}") == "\"Quote\"")
    #expect(fixed("fish &amp; chips &EACUTE; &#59;") == "fish & chips É &#59;")
    #expect(fixed("<b> &amp;") == "<b> &amp;")
    #expect(fixed("ﬁsh ＡＢＣ “x” \u{1B}[31mred\u{1B}[0m") == "fish ABC \"x\" red")
    #expect(fixed("e\u{301}\r\n\u{FEFF}") == "é\n")
}
