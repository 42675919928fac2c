import Foundation
import Testing
import HasteIO
import HasteTensor

/// `haste generate` with a tiny MMDiT (T2IFiles): ODE 2 steps, CFG 2 on t ≤ 0.7, one sample per batch (so every
/// run computes each sample alike, bit for bit), the synthetic vocabulary. Returns (status, stdout, stderr).
private func generate(_ extra: [String], ckpt: String = T2IFiles.shared.checkpoint, dir: String) throws -> (status: Int32, stdout: String, stderr: String) {
    try runHasteOutput(["generate", "--ckpt", ckpt, "--sample-dir", dir, "--mode", "ode", "--num-steps", "2", "--cfg-scale", "2",
                        "--guidance-high", "0.7", "--per-proc-batch-size", "1", "--tokenizer-vocab", T2IFiles.shared.vocab, "--threads", "1"] + extra)
}

private func lines(_ path: String) throws -> [[String: Any]] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
        try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
}

/// --prompt (repeated) end to end: the run's own text encoder is found and named, the .npz path is the last line,
/// samples cycle through the prompts (recorded in <folder>.captions.jsonl), the grid has a column per prompt;
/// --prompts-file with the same prompts gives the same .npz, byte for byte, and so does a run split in two shards.
@Test func generateWithPromptsEndToEnd() throws {
    let dir = temporaryDirectory()
    let r = try generate(["--prompt", "a photo of a sneaker", "--prompt", "a bag", "--num-fid-samples", "5"], dir: dir + "/a")
    #expect(r.status == 0, "\(r.stderr)")
    #expect(r.stderr.contains("text encoder: \(T2IFiles.shared.dir)/run/checkpoints/../text_encoder.safetensors")
            || r.stderr.contains("text encoder: \(T2IFiles.shared.dir)/run/text_encoder.safetensors"), "\(r.stderr)")
    let npz = try #require(r.stdout.split(separator: "\n").last.map(String.init))
    #expect((npz as NSString).lastPathComponent == "MMDiT-D2-2-0000010-size-8-vae-none-cfg-2.0-seed-0-ode-high-0.7.npz")
    let batch = try NpzArchive(path: npz).tensor("arr_0")
    #expect(batch.dtype == .uint8 && batch.shape == [5, 8, 8, 3])
    let table = try lines(String(npz.dropLast(4)) + ".captions.jsonl")
    #expect(table.map { $0["caption"] as? String } == ["a photo of a sneaker", "a bag", "a photo of a sneaker", "a bag", "a photo of a sneaker"])
    #expect(table.map { $0["index"] as? Int } == [0, 1, 2, 3, 4])
    let grid = try PNGImage.read(String(npz.dropLast(4)) + ".grid.png")
    #expect(grid.width == 2 * (96 + 4) + 4 && grid.height > 3 * (96 + 4), "\(grid.width)×\(grid.height)")
    #expect(r.stderr.contains("grid with the prompts"), "\(r.stderr)")

    let file = dir + "/prompts.txt"
    try "a photo of a sneaker\na bag\n".write(toFile: file, atomically: true, encoding: .utf8)
    let again = try generate(["--prompts-file", file, "--num-fid-samples", "5"], dir: dir + "/b")
    #expect(again.status == 0, "\(again.stderr)")
    let npz2 = try #require(again.stdout.split(separator: "\n").last.map(String.init))
    #expect(try Data(contentsOf: URL(fileURLWithPath: npz2)) == Data(contentsOf: URL(fileURLWithPath: npz)))

    let s1 = try generate(["--prompt", "a photo of a sneaker", "--prompt", "a bag", "--num-fid-samples", "5", "--shard", "1/2"], dir: dir + "/c")
    #expect(s1.status == 0 && s1.stdout.contains("still missing"), "\(s1.stderr)")
    let s0 = try generate(["--prompt", "a photo of a sneaker", "--prompt", "a bag", "--num-fid-samples", "5", "--shard", "0/2"], dir: dir + "/c")
    #expect(s0.status == 0, "\(s0.stderr)")
    let npz3 = try #require(s0.stdout.split(separator: "\n").last.map(String.init))
    #expect(try Data(contentsOf: URL(fileURLWithPath: npz3)) == Data(contentsOf: URL(fileURLWithPath: npz)))

    let seed = try generate(["--prompt", "a photo of a sneaker", "--prompt", "a bag", "--num-fid-samples", "5", "--global-seed", "1",
                             "--text-encoder", T2IFiles.shared.clip64], dir: dir + "/d")
    let npz4 = try #require(seed.stdout.split(separator: "\n").last.map(String.init))
    #expect(try Data(contentsOf: URL(fileURLWithPath: npz4)) != Data(contentsOf: URL(fileURLWithPath: npz)))
}

/// --coco-captions end to end: the generate_t2i.py folder name, one caption per sample from the images in
/// ascending id order (recorded with their image ids), samples wrapping round the images with a note.
@Test func generateWithCOCOCaptionsEndToEnd() throws {
    let dir = temporaryDirectory(), coco = dir + "/captions_val2014.json"
    try writeTinyCOCOCaptions(coco)
    let r = try generate(["--coco-captions", coco, "--num-fid-samples", "4", "--mode", "sde", "--prefix", "tiny"], dir: dir + "/s")
    #expect(r.status == 0, "\(r.stderr)")
    let npz = try #require(r.stdout.split(separator: "\n").last.map(String.init))
    #expect((npz as NSString).lastPathComponent == "tiny-coco-size-8-vae-none-cfg-2.0-seed-0-sde.npz")
    #expect(try NpzArchive(path: npz).tensor("arr_0").shape == [4, 8, 8, 3])
    let table = try lines(String(npz.dropLast(4)) + ".captions.jsonl")
    #expect(table.map { $0["image_id"] as? Int } == [7, 19, 42, 7])
    #expect(table[1]["caption"] as? String == "two cats \"sleeping\"")
    #expect(r.stderr.contains("4 samples cycle through the 3 captioned images"), "\(r.stderr)")
}

/// Bad inputs name the file or flag and what to do.
@Test func generateWithPromptsRefusesBadInputs() throws {
    let f = T2IFiles.shared, dir = temporaryDirectory()
    func expectError(_ args: [String], ckpt: String = f.checkpoint, _ phrases: String..., sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try generate(args, ckpt: ckpt, dir: dir + "/out")
        #expect(r.status != 0 && phrases.allSatisfy { r.stderr.contains($0) }, "\(args): \(r.stderr)", sourceLocation: sourceLocation)
    }
    try expectError(["--prompts-file", dir + "/none.txt"], dir + "/none.txt", "--prompts-file")
    let file = dir + "/prompts.txt"
    try "a cat\n\na dog\n".write(toFile: file, atomically: true, encoding: .utf8)
    try expectError(["--prompts-file", file], file, "line 2 is empty")
    try expectError(["--prompt", "a cat"], ckpt: f.plain, "no text encoder", "--text-encoder", "clip-vit-large-patch14")
    try expectError(["--prompt", "a cat", "--text-encoder", f.clip32], "32-wide text features", "context_embedder takes 64")
    try expectError([], "text-to-image", "--prompt TEXT")
    try expectError(["--prompt", "a cat", "--prompts-file", file], "not --prompt and --prompts-file")
    let coco = dir + "/bad.json"
    try "{\"images\": [{\"id\": 3}], \"annotations\": [{\"image_id\": 3}]}".write(toFile: coco, atomically: true, encoding: .utf8)
    try expectError(["--coco-captions", coco], coco, "annotations[0] has no integer \"image_id\"")
    let sit = dir + "/sit.safetensors"
    try writeTinyCheckpoint(sit)
    try expectError(["--prompt", "a cat"], ckpt: sit, "class-conditional SiT-S/2", "drop --prompt")
    try expectError([], ckpt: sit, "--tokenizer-vocab applies to text-to-image checkpoints")
}
