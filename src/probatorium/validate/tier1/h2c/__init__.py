"""The h2c churn slice: HTTP/1.1 → HTTP/2 cleartext upgrade attempts, resets and malformed preambles."""
