import { readFile } from "node:fs/promises";

/** A secret reference that could not be resolved. Never includes the secret itself. */
export class SecretError extends Error {
  override name = "SecretError";
}

/**
 * Resolves `env:NAME` or `file:/path` to the secret's value. Only token-service (and, for
 * password mailboxes, nothing else) calls this; every other process sees references only.
 * A value with neither prefix is taken literally — `config check` warns about those.
 */
export async function resolveSecret(ref: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (ref.startsWith("env:")) {
    const name = ref.slice(4);
    const value = env[name];
    if (value === undefined || value === "") throw new SecretError(`environment variable ${name} is not set (referenced as ${ref})`);
    return value;
  }
  if (ref.startsWith("file:")) {
    const path = ref.slice(5);
    try {
      return (await readFile(path, "utf8")).replace(/\r?\n$/, "");
    } catch (cause) {
      throw new SecretError(`cannot read secret file ${path}: ${(cause as NodeJS.ErrnoException).code ?? "error"}`, { cause });
    }
  }
  return ref;
}

/** True when a value is a reference rather than an inline secret. */
export function isSecretRef(value: string): boolean {
  return value.startsWith("env:") || value.startsWith("file:");
}
