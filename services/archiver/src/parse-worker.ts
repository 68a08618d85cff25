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
  /** The .eml opened by the pool, which closes it (file descriptors are shared by every thread). */
  fd: number;
}

parentPort!.on("message", (req: ParseRequest) => {
  parseToParts(req.emlPath, req.partsDir, req.fd).then(
    (summary) => parentPort!.postMessage({ ok: true, summary } satisfies ParseOutcome),
    (error: unknown) => parentPort!.postMessage({ ok: false, error: error instanceof Error ? error.message : String(error), timedOut: false } satisfies ParseOutcome),
  );
});

// Loaded (mailparser included): the pool may send messages now; its time limit starts then.
parentPort!.postMessage("ready");
