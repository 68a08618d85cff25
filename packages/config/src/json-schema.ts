import { z } from "zod";
import { PostroomConfig } from "./schema.js";

/**
 * The JSON Schema of the configuration file as an operator writes it (io: "input": fields with
 * defaults are optional). Editors use it for completion and inline docs via
 * `# yaml-language-server: $schema=./postroom.schema.json`. Semantic checks (duplicate ids, …) are
 * not expressible here; `postroom config check` runs them.
 */
export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(PostroomConfig, { io: "input", unrepresentable: "any" }),
    title: "Postroom configuration",
  };
}

/** The committed file's exact text, so the staleness test and the generator cannot disagree. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
