// The reference for the tokenizer tests: Hugging Face's own JavaScript
// tokenizer (@huggingface/tokenizers) on the same tokenizer files.
//
//   node reference.cjs NPM_DIR MODEL_DIR < cases.json > answers.json
//
// cases: {"encode": [{"text", "add_special"}], "decode": [{"ids", "skip_special"}],
//         "nfc": [text], "time": {"text", "seconds"}}
// answers: {"encode": [[ids]], "decode": [text], "nfc": [text],
//           "time": {"bytes_per_second"}}
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const [npmDir, modelDir] = process.argv.slice(2);
const req = createRequire(path.join(path.resolve(npmDir), "package.json"));
const { Tokenizer } = req("@huggingface/tokenizers");

const read = (f) => JSON.parse(fs.readFileSync(path.join(modelDir, f), "utf8"));
const tok = new Tokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const out = {};
out.encode = (cases.encode || []).map((c) =>
  tok.encode(c.text, { add_special_tokens: !!c.add_special }).ids);
out.decode = (cases.decode || []).map((c) => c.ids.length === 0 ? "" :
  tok.decode(c.ids, { skip_special_tokens: !!c.skip_special,
                      clean_up_tokenization_spaces: false }));
out.nfc = (cases.nfc || []).map((t) => t.normalize("NFC"));
if (cases.time) {
  // Throughput of encode on one text, for the benchmark's ratio.
  const text = cases.time.text;
  const bytes = Buffer.byteLength(text, "utf8");
  tok.encode(text.slice(0, 10000), { add_special_tokens: false });
  let n = 0;
  const t0 = process.hrtime.bigint();
  let dt = 0;
  do {
    tok.encode(text, { add_special_tokens: false });
    n++;
    dt = Number(process.hrtime.bigint() - t0) / 1e9;
  } while (dt < cases.time.seconds);
  out.time = { bytes_per_second: (n * bytes) / dt };
}
process.stdout.write(JSON.stringify(out));
