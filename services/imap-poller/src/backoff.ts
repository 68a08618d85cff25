/**
 * Capped exponential backoff with full jitter. `reset()` is called only after a connection has
 * proven stable (a completed check), so a server that accepts and then drops connections does
 * not get hammered at the minimum delay.
 */
export class Backoff {
  #attempt = 0;
  constructor(
    private readonly baseMs = 1000,
    private readonly capMs = 60_000,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  reset(): void {
    this.#attempt = 0;
  }
}
