import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { configJsonSchemaText } from "./index.js";

describe("postroom.schema.json", () => {
  it("is up to date with the zod schema (regenerate: pnpm --filter @postroom/config gen:schema)", async () => {
    const committed = await readFile(new URL("../postroom.schema.json", import.meta.url), "utf8");
    assert.equal(committed, configJsonSchemaText(), "postroom.schema.json is stale: run pnpm --filter @postroom/config gen:schema");
  });

  it("documents the fields an operator writes", async () => {
    const schema = JSON.parse(await readFile(new URL("../postroom.schema.json", import.meta.url), "utf8")) as {
      required: string[];
      properties: Record<string, { description?: string }>;
    };
    assert.deepEqual([...schema.required].sort(), ["archive", "database", "tenants", "version"]);
    assert.match(schema.properties.version?.description ?? "", /version/);
  });
});
