import HasteTensor

extension TrainConfig {
    /// String keys that take one of a fixed set of values (issue #18): an unknown value is an error naming the
    /// allowed ones at load, before any model or data is opened. Enum keys (path-type, weighting) are checked
    /// by their type when parsed.
    static let choices: [String: (allowed: [String], why: String)] = [
        "mixed-precision": (ComputePrecision.flags, "`no` = float32; `bf16`/`fp16` = GEMMs, convolutions and attention in bf16/fp16 with float32 accumulation, "
                            + "fp16 with dynamic loss scaling; `auto` = bf16 on CUDA, `no` on the CPU"),
        "prediction": (["v"], "only v-prediction exists in the reference"),
        "dataset": (["imagenet", "images", "fashion-mnist", "coco", "fashion-mnist-captions"],
                    "imagenet = images/ + vae-sd/ latents, images = PNG folder + dataset.json, fashion-mnist = the demo's, "
                    + "coco = MS-COCO caption features (MMDiT), fashion-mnist-captions = the text-to-image demo's"),
        "report-to": (ReportTargets.names, "all = metrics.jsonl and TensorBoard event files; wandb is not supported: "
                      + "haste starts no tracker, watch the event files with `tensorboard --logdir <output-dir>`"),
    ]

    /// Throws `HasteError.config` for the first key (sorted) whose value is not one of its `choices`.
    func validateChoices() throws {
        let values = TrainConfig.typedDefaults(of: self)
        for key in TrainConfig.choices.keys.sorted() {
            let (allowed, why) = TrainConfig.choices[key]!
            let value = values[key] as? String
            require(value != nil, "TrainConfig.choices: '\(key)' is not a string key")
            if !allowed.contains(value!) {
                throw HasteError.config(key: key, detail: "unknown value '\(value!)'; allowed: \(allowed.joined(separator: ", ")) (\(why))")
            }
        }
    }
}
