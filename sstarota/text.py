"""Text from a package, made safe to show: names and labels are untrusted bytes."""


def shown(text):
    """text with control characters (terminal escapes) and undecodable bytes escaped as \\xNN."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append("\\x%02x" % (o - 0xDC00))
        elif not ch.isprintable() and ch != " ":
            out.append("\\x%02x" % o if o < 0x100 else "\\u%04x" % o)
        else:
            out.append(ch)
    return "".join(out)
