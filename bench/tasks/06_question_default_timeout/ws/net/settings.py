from net.constants import BASE_TIMEOUT, RETRY_FACTOR

USER_AGENT = "crawler/0.3"
# we retry at the socket level, so the overall timeout covers every attempt
DEFAULT_TIMEOUT = BASE_TIMEOUT * RETRY_FACTOR
