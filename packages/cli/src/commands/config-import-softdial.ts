import { access, chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { formatEnvFile, importSoftdial, SoftdialImportError } from "@postroom/config";
import { EXIT_USAGE } from "../dispatch.js";

/** The secrets file's name; it is written beside the YAML. */
export const ENV_FILE_NAME = "postroom.env";

export const help = `Usage: postroom config import-softdial <config.xml> -o postroom.yaml [--force]

Converts a Softdial Workflow config.xml (its email Campaigns, wherever they are in the file) into a
Postroom configuration. Writes the YAML and, beside it, ${ENV_FILE_NAME} (mode 0600) holding the
secrets that the YAML references as env:NAME. Prints every assumption it made and every warning.
Run \`postroom config check\` on the result before starting Postroom.

Options:
  -o, --output FILE   where to write the YAML (required)
  -f, --force         overwrite existing files
  -h, --help          show this help
`;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        output: { type: "string", short: "o" },
        force: { type: "boolean", short: "f" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    process.stderr.write(`postroom config import-softdial: ${(e as Error).message}\n\n${help}`);
    return EXIT_USAGE;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(help);
    return 0;
  }
  const [input, ...extra] = positionals;
  if (input === undefined || extra.length > 0 || values.output === undefined) {
    process.stderr.write(`postroom config import-softdial: give one config.xml and -o postroom.yaml\n\n${help}`);
    return EXIT_USAGE;
  }
  const output = resolve(values.output);
  const envPath = join(dirname(output), ENV_FILE_NAME);

  let xml: string;
  try {
    xml = await readFile(input, "utf8");
  } catch (e) {
    process.stderr.write(`postroom config import-softdial: cannot read ${input}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
    return 1;
  }

  let result;
  try {
    result = importSoftdial(xml, { envFileName: ENV_FILE_NAME, sourceName: basename(input) });
  } catch (e) {
    if (e instanceof SoftdialImportError) {
      process.stderr.write(`${input}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }

  if (!values.force) {
    for (const path of [output, envPath]) {
      if (await exists(path)) {
        process.stderr.write(`postroom config import-softdial: ${path} exists; use --force to overwrite it\n`);
        return 1;
      }
    }
  }
  try {
    await mkdir(dirname(output), { recursive: true });
    await writeFile(output, result.yaml);
    // mode applies only when the file is created; chmod covers an overwritten file.
    const header = `Secrets imported from ${basename(input)}. Referenced from ${basename(output)} as env:NAME.\nKeep this file private: it is mode 0600 and must not be committed.`;
    await writeFile(envPath, formatEnvFile(result.env, header), { mode: 0o600 });
    await chmod(envPath, 0o600);
  } catch (e) {
    process.stderr.write(`postroom config import-softdial: cannot write ${output}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
    return 1;
  }

  process.stdout.write(`wrote ${output}\nwrote ${envPath} (mode 0600, ${Object.keys(result.env).length} secret${Object.keys(result.env).length === 1 ? "" : "s"})\n`);
  if (result.assumptions.length > 0) {
    process.stdout.write(`\nAssumptions (${result.assumptions.length}):\n${result.assumptions.map((a) => `  - ${a}\n`).join("")}`);
  }
  if (result.warnings.length > 0) {
    process.stdout.write(`\nWarnings (${result.warnings.length}):\n${result.warnings.map((w) => `  - ${w}\n`).join("")}`);
  }
  process.stdout.write(`\nNext: postroom config check ${values.output}\n`);
  return 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
