import { parentPort } from "node:worker_threads";
import { parseToParts, type ParseOutcome } from "./parse.js";

/**
 * A parser worker: parses one message at a time, on request from the ParsePool. mailparser is
 * synchronous in places (charset conversion, base64 of large parts) and a hostile message can
 * make it slow or hungry; here that blocks only this thread, which the pool can terminate.
 */
interface ParseRequest {
  emlPath: string;
  partsDir: string;
}

parentPort!.on("message", (req: ParseRequest) => {
  parseToParts(req.emlPath, req.partsDir).then(
    (summary) => parentPort!.postMessage({ ok: true, summary } satisfies ParseOutcome),
    (error: unknown) => parentPort!.postMessage({ ok: false, error: error instanceof Error ? error.message : String(error), timedOut: false } satisfies ParseOutcome),
  );
});
