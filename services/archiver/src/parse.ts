import { readFile } from "node:fs/promises";
import { simpleParser, type ParsedMail } from "mailparser";

export interface ParseLimits {
  /** Messages larger than this are archived raw and not parsed (default 64 MiB). */
  maxBytes: number;
  /** A parse that takes longer is abandoned (default 30 s). */
  timeoutMs: number;
}

export type ParseResult = { ok: true; mail: ParsedMail } | { ok: false; error: string };

/**
 * Parses with mailparser, which honours declared charsets (ISO-2022-JP, windows-125x, KOI8-R …).
 * Failure is a value, not an exception: the raw .eml is archived and offered whatever happens here.
 */
export async function parseMessage(path: string, size: number, limits: ParseLimits): Promise<ParseResult> {
  if (size > limits.maxBytes) return { ok: false, error: `message of ${size} bytes exceeds the parse limit of ${limits.maxBytes}` };
  let timer: NodeJS.Timeout | undefined;
  try {
    const raw = await readFile(path);
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`parsing took longer than ${limits.timeoutMs} ms`)), limits.timeoutMs);
    });
    const mail = await Promise.race([simpleParser(raw, { skipImageLinks: true, keepCidLinks: true }), timeout]);
    return { ok: true, mail };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  } finally {
    clearTimeout(timer);
  }
}
