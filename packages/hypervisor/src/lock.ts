/** Serialises lifecycle operations of one VM: no two overlap; a failed operation does not block the next. */
export class OperationLock {
  private tail: Promise<unknown> = Promise.resolve();
  private running: string | undefined;
  private queued = 0;

  /** Name of the operation currently holding the lock, if any. */
  get current(): string | undefined {
    return this.running;
  }
  /** Operations waiting for the lock. */
  get waiting(): number {
    return this.queued;
  }

  run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const start = async () => {
      this.queued--;
      this.running = name;
      try {
        return await fn();
      } finally {
        this.running = undefined;
      }
    };
    const p = this.tail.then(start, start);
    this.tail = p.catch(() => {});
    return p;
  }
}
