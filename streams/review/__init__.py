"""People in the loop: uncertain items put before a person (`queue`), the queue as the review page shows
it (`board`), and the worker's fold of the review and corrections topics into it (`follow`)."""
