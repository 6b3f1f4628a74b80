extension ImageProbe {
    /// A multi-picture JPEG (an MPO: a phone's Ultra HDR photo with its gain map, a camera's
    /// preview, a stereo pair) cut to its first picture, without the APP2 `MPF` segment that
    /// makes Pillow open every picture as a frame. Anything else comes back as it is.
    ///
    /// ComfyUI's LoadImage converts each frame to a tensor before it keeps the first, so a small
    /// MPO of many large frames would take the memory of all of them: the pixel limit is the
    /// first picture's, and so is the image ComfyUI gets.
    public static func firstPicture(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.starts(with: [0xFF, 0xD8, 0xFF]) else { return bytes }
        var mpf: Range<Int>?
        var offset = 2
        // The segments up to the first scan (as `jpeg` walks them).
        while offset + 4 <= bytes.count, bytes[offset] == 0xFF {
            let marker = bytes[offset + 1]
            if marker == 0xFF { offset += 1; continue }
            let length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard length >= 2, offset + 2 + length <= bytes.count else { return bytes }
            if isMultiPictureIndex(bytes, at: offset) { mpf = offset..<offset + 2 + length }
            offset += 2 + length
            if marker == 0xDA { break }
        }
        guard let mpf, let end = endOfFirstPicture(bytes, scanFrom: offset) else { return bytes }
        return Array(bytes[..<mpf.lowerBound]) + Array(bytes[mpf.upperBound..<end])
    }

    /// Whether the segment at `offset` (its length checked to lie within `bytes`) is the APP2
    /// `MPF` index that makes a JPEG a multi-picture one.
    static func isMultiPictureIndex(_ bytes: [UInt8], at offset: Int) -> Bool {
        bytes[offset + 1] == 0xE2 && (Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])) >= 6
            && bytes[offset + 4..<offset + 8].elementsEqual("MPF\u{0}".utf8)
    }

    /// Just past the first picture's EOI, reading entropy-coded data from `offset` (after the
    /// first scan's header): stuffed `FF 00`, restart markers and fill bytes are data; a
    /// segment between scans (a progressive JPEG's tables and scans) is skipped by its length.
    private static func endOfFirstPicture(_ bytes: [UInt8], scanFrom start: Int) -> Int? {
        var offset = start
        while offset + 1 < bytes.count {
            guard bytes[offset] == 0xFF else { offset += 1; continue }
            let marker = bytes[offset + 1]
            switch marker {
            case 0x00, 0xD0...0xD7, 0xFF:
                offset += marker == 0xFF ? 1 : 2
            case 0xD9:
                return offset + 2
            default:
                guard offset + 4 <= bytes.count else { return nil }
                let length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                guard length >= 2 else { return nil }
                offset += 2 + length
            }
        }
        return nil
    }
}
