// The image's entrypoint: `postroom <service>` starts that service's compiled main module. One
// image for all five keeps the chart to one image reference and one version to roll.
// `postroom db-setup` runs the database set-up instead (migrations as the owner, then each
// service's role and grants): the chart's db-setup Job.
import { realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const SERVICES = ["token-service", "imap-poller", "archiver", "asd-bridge", "smtp-sender"];
const COMMANDS = { "db-setup": ["runtime", "db-setup-main.js"] };
const service = process.argv[2];
if (!SERVICES.includes(service ?? "") && !(service in COMMANDS)) {
  process.stderr.write(`usage: <image> <service>, where <service> is one of: ${[...SERVICES, ...Object.keys(COMMANDS)].join(", ")}${service ? ` (not "${service}")` : ""}\n`);
  process.exit(2);
}
// Each service package exports only its library entry; main.js (the one file with side effects)
// is reached by path, through the link pnpm deploy made in node_modules.
const [pkgName, file] = COMMANDS[service] ?? [service, "main.js"];
const pkg = realpathSync(join(dirname(fileURLToPath(import.meta.url)), "node_modules", "@postroom", pkgName));
await import(pathToFileURL(join(pkg, "dist", file)).href);
