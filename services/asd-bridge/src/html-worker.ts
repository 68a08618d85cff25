import { setPriority } from "node:os";
import { parentPort } from "node:worker_threads";
import { htmlAsText, sanitizeEmailHtml } from "./html.js";

/**
 * Sanitising gives way to the agent API. On Linux a nice value belongs to a thread, and
 * setpriority(PRIO_PROCESS, 0, …) — what setPriority(19) calls — sets this worker thread's own,
 * leaving the API's thread at its priority: under load the scheduler serves the API first and a
 * heavy body is the one that waits (and, past its budget, is shown as text). Only a thread that
 * sanitises lowers itself: the text renderer's work is short and linear, and it must still be
 * done when a sanitiser was not. Elsewhere the same call would lower the whole process, so it is
 * made on Linux only.
 */
let lowered = false;
function giveWay(): void {
  if (lowered || process.platform !== "linux") return;
  lowered = true;
  try {
    setPriority(19);
  } catch {
    // Not allowed here (some sandboxes): the pool still keeps the work off the event loop.
  }
}

/** One job at a time, off the agent API's event loop (see html-pool.ts): sanitise, or render as text. */
parentPort!.on("message", (job: { html: string; inline?: Record<string, string>; text?: boolean; sanitise?: boolean }) => {
  if (job.sanitise) {
    giveWay();
    parentPort!.postMessage({ html: sanitizeEmailHtml(job.html, (cid) => job.inline?.[cid]) });
  } else parentPort!.postMessage({ text: htmlAsText(job.html) });
});

// Loaded (sanitize-html included): the pool may send jobs now.
parentPort!.postMessage("ready");
