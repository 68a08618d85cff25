// Writes postroom.schema.json next to package.json. Run: pnpm --filter @postroom/config gen:schema
import { writeFile } from "node:fs/promises";
import { configJsonSchemaText } from "./json-schema.js";

const target = new URL("../postroom.schema.json", import.meta.url);
await writeFile(target, configJsonSchemaText());
console.log(`wrote ${target.pathname}`);
