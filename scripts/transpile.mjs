// Compiles every workspace library and service under packages/ and services/ from src/*.ts to
// dist/*.js, type-free, with esbuild: one file in, one file out, no bundling, so the output is
// what `tsc -p tsconfig.build.json` emits minus the .d.ts files. scripts/image.sh uses it because
// the image needs only JavaScript, and the 13 tsc builds take over a minute and a half on a
// loaded 2-core machine where this takes seconds. The type check stays `pnpm typecheck`'s job;
// verbatimModuleSyntax and isolatedModules (tsconfig.base.json) make a per-file compile exact.
import { readdirSync, existsSync, rmSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") && !e.name.endsWith(".d.ts"))
    .map((e) => join(e.parentPath, e.name));
}

let files = 0;
for (const group of ["packages", "services"]) {
  for (const name of readdirSync(join(ROOT, group))) {
    const pkg = join(ROOT, group, name);
    const src = join(pkg, "src");
    if (!existsSync(src)) continue;
    const entryPoints = sources(src);
    rmSync(join(pkg, "dist"), { recursive: true, force: true });
    await build({ entryPoints, outdir: join(pkg, "dist"), outbase: src, format: "esm", platform: "node", target: "node20", sourcemap: false, logLevel: "warning" });
    files += entryPoints.length;
    process.stderr.write(`transpile: ${relative(ROOT, pkg)} (${entryPoints.length} files)\n`);
  }
}
process.stderr.write(`transpile: ${files} files\n`);
