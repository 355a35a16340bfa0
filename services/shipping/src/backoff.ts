// Pauses that double up to a bound, with jitter (agora/backoff.py).
export class Backoff {
  private current: number;

  constructor(
    private readonly initial: number,
    private readonly max: number,
    private readonly jitter: number,
  ) {
    this.current = initial;
  }

  /** The next pause, in seconds. */
  next(): number {
    const pause = this.current + Math.random() * this.jitter;
    this.current = Math.min(this.current * 2, this.max);
    return Math.min(pause, this.max + this.jitter);
  }

  reset(): void {
    this.current = this.initial;
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
