# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title ComputeRegistry
@notice The on-chain record of compute-to-data: algorithms published by hash,
        each dataset's trusted algorithms, and every job — which consumer ran
        which algorithm with which parameters on which dataset version, whether
        the owner approved it, and the hash of the result. Which model came from
        which data is read from here.

        A job is recorded by the dataset's controller or by an operator the
        controller named (the owner's compute node), and only once it is paid:
        either by the consumer's valid order of the dataset's compute service
        (a time window: any number of jobs while it lasts), or by an escrow the
        consumer locked for this very job at the dataset's per-job price.

        The escrow: `lock` takes the per-job price in the market currency from
        the consumer; the escrow ends in exactly one of two ways. Paid: the job
        succeeded by its deadline and `complete` recorded its result hash (the
        SHA-256 of the sealed result the consumer downloads), which the
        `EscrowPaid` event carries; the controller at that moment receives the
        amount. Refunded: the job failed, was denied, was cancelled, or was not
        completed by the deadline (then anyone may `reclaim` it, the money goes
        back to the consumer).
"""

from ethereum.ercs import IERC20

interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def controller_epoch(dataset: uint256) -> (address, uint256): view
    def datatoken_of(dataset: uint256) -> address: view
    def market_info(dataset: uint256, buyer: address) -> (address, address): view
    def may_use(dataset: uint256, consumer: address) -> bool: view


interface IDatatoken:
    def has_valid_order(consumer: address, service_id: uint256) -> bool: view


STATUS_PENDING: constant(uint8) = 1  # waiting for the owner's review
STATUS_APPROVED: constant(uint8) = 2  # trusted algorithm or approved: may run
STATUS_DENIED: constant(uint8) = 3
STATUS_SUCCEEDED: constant(uint8) = 4
STATUS_FAILED: constant(uint8) = 5
STATUS_CANCELLED: constant(uint8) = 6  # cancelled or timed out before it was settled

ESCROW_LOCKED: constant(uint8) = 1
ESCROW_PAID: constant(uint8) = 2
ESCROW_REFUNDED: constant(uint8) = 3

# Why an escrow was refunded (EscrowRefunded.reason).
REFUND_FAILED: constant(uint8) = 1
REFUND_DENIED: constant(uint8) = 2
REFUND_CANCELLED: constant(uint8) = 3
REFUND_TIMED_OUT: constant(uint8) = 4
REFUND_UNUSED: constant(uint8) = 5  # never bound to a job, taken back by its consumer

MAX_JOB_TIMEOUT: constant(uint256) = 30 * 86400
MAX_CONSUMER_KEY: constant(uint256) = 128
U64: constant(uint256) = 2**64 - 1
U128: constant(uint256) = 2**128 - 1

DATA_NFT: public(immutable(address))
CURRENCY: public(immutable(address))

# algorithm hash -> who published it (zero: not published)
algorithm_publisher: public(HashMap[bytes32, address])
# dataset -> algorithm hash -> 1 + the dataset's transfer epoch in which the
# controller trusted it (0: not trusted). A transfer of the dataset ends it.
_trusted: HashMap[uint256, HashMap[bytes32, uint256]]
# dataset -> account -> 1 + the epoch in which it was made an operator (may record
# and settle jobs for the dataset); a transfer of the dataset ends it.
_operator: HashMap[uint256, HashMap[address, uint256]]

job_count: public(uint256)


struct Job:
    dataset: uint256
    version: uint256
    service_id: uint256
    consumer: address
    algorithm: bytes32
    params: bytes32
    status: uint8
    result: bytes32


jobs: public(HashMap[uint256, Job])

# dataset -> price per job in CURRENCY base units (0: jobs are paid by orders only)
#            | seconds an escrow waits for its job's result << 128
_job_terms: HashMap[uint256, uint256]

escrow_count: public(uint256)
# escrow -> consumer | deadline << 160 | state << 224
_escrow_a: HashMap[uint256, uint256]
# escrow -> amount | dataset << 128 | job << 192 (job 0: not bound yet)
_escrow_b: HashMap[uint256, uint256]
# escrow -> keccak256(consumer, dataset, algorithm, params): the job it pays for
_escrow_terms: HashMap[uint256, bytes32]
# job -> the escrow that pays for it (0: paid by an order)
job_escrow: public(HashMap[uint256, uint256])


event AlgorithmPublished:
    algorithm: indexed(bytes32)
    publisher: indexed(address)
    uri: String[432]


event TrustedAlgorithmChanged:
    dataset: indexed(uint256)
    algorithm: indexed(bytes32)
    trusted: bool


event OperatorChanged:
    dataset: indexed(uint256)
    operator: indexed(address)
    allowed: bool


event JobTermsChanged:
    dataset: indexed(uint256)
    price: uint256
    timeout: uint256


event EscrowLocked:
    escrow: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)
    amount: uint256
    deadline: uint256
    algorithm: bytes32
    params: bytes32
    consumer_key: Bytes[MAX_CONSUMER_KEY]


event EscrowPaid:
    escrow: indexed(uint256)
    job: indexed(uint256)
    payee: indexed(address)
    amount: uint256
    result: bytes32


event EscrowRefunded:
    escrow: indexed(uint256)
    job: indexed(uint256)
    consumer: indexed(address)
    amount: uint256
    reason: uint8


event JobCancelled:
    job: indexed(uint256)
    dataset: indexed(uint256)
    by: address


event JobRecorded:
    job: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)
    version: uint256
    service_id: uint256
    algorithm: bytes32
    params: bytes32
    status: uint8


event JobDecided:
    job: indexed(uint256)
    dataset: indexed(uint256)
    approved: bool
    reason: String[256]


event JobCompleted:
    job: indexed(uint256)
    dataset: indexed(uint256)
    succeeded: bool
    result: bytes32
    epsilon_milli: uint256
    note: String[256]


@deploy
def __init__(data_nft: address, currency: address):
    DATA_NFT = data_nft
    CURRENCY = currency


@internal
@view
def _check_operator(dataset: uint256) -> uint256:
    """Reverts unless msg.sender is the controller or a current operator; the epoch + 1."""
    controller: address = empty(address)
    epoch: uint256 = 0
    controller, epoch = staticcall IDataNFT(DATA_NFT).controller_epoch(dataset)
    assert msg.sender == controller or self._operator[dataset][msg.sender] == epoch + 1, "datagora: not controller"
    return epoch + 1


@internal
@view
def _check_controller(dataset: uint256) -> uint256:
    controller: address = empty(address)
    epoch: uint256 = 0
    controller, epoch = staticcall IDataNFT(DATA_NFT).controller_epoch(dataset)
    assert msg.sender == controller, "datagora: not controller"
    return epoch + 1


@external
@view
def trusted(dataset: uint256, algorithm: bytes32) -> bool:
    """
    @notice True if the dataset's current holder trusts `algorithm` (runs without review).
    """
    tag: uint256 = self._trusted[dataset][algorithm]
    if tag == 0:
        return False
    controller: address = empty(address)
    epoch: uint256 = 0
    controller, epoch = staticcall IDataNFT(DATA_NFT).controller_epoch(dataset)
    return tag == epoch + 1


@external
@view
def operator(dataset: uint256, account: address) -> bool:
    """
    @notice True if `account` is an operator the dataset's current holder named.
    """
    tag: uint256 = self._operator[dataset][account]
    if tag == 0:
        return False
    controller: address = empty(address)
    epoch: uint256 = 0
    controller, epoch = staticcall IDataNFT(DATA_NFT).controller_epoch(dataset)
    return tag == epoch + 1


@external
def publish_algorithm(algorithm: bytes32, uri: String[432]):
    """
    @notice Publish an algorithm asset: its SHA-256 and where its code is.
    """
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    assert self.algorithm_publisher[algorithm] == empty(address), "datagora: algorithm exists"
    self.algorithm_publisher[algorithm] = msg.sender
    log AlgorithmPublished(algorithm=algorithm, publisher=msg.sender, uri=uri)


@external
def set_trusted(dataset: uint256, algorithm: bytes32, trusted_: bool):
    """
    @notice Allow (or stop allowing) `algorithm` on `dataset` without review. Controller only.
    """
    tag: uint256 = self._check_controller(dataset)
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    self._trusted[dataset][algorithm] = tag if trusted_ else 0
    log TrustedAlgorithmChanged(dataset=dataset, algorithm=algorithm, trusted=trusted_)


@external
def set_operator(dataset: uint256, operator_: address, allowed: bool):
    """
    @notice Let `operator_` (the owner's compute node) record and settle jobs. Controller only.
    """
    tag: uint256 = self._check_controller(dataset)
    assert operator_ != empty(address), "datagora: zero address"
    self._operator[dataset][operator_] = tag if allowed else 0
    log OperatorChanged(dataset=dataset, operator=operator_, allowed=allowed)


@external
def record_job(dataset: uint256, version: uint256, service_id: uint256, consumer: address, algorithm: bytes32, params: bytes32, escrow: uint256) -> uint256:
    """
    @notice Record a job the consumer asked for. It starts approved when the
            algorithm is trusted for the dataset, pending review otherwise.
            `escrow` 0: paid by the consumer's valid order of `service_id`;
            otherwise the consumer's locked, unused escrow for exactly this
            dataset, algorithm and parameters, which the job now binds.
    @return The job id.
    """
    tag: uint256 = self._check_operator(dataset)
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    job: uint256 = self.job_count + 1
    if escrow == 0:
        token: address = staticcall IDataNFT(DATA_NFT).datatoken_of(dataset)
        assert staticcall IDatatoken(token).has_valid_order(consumer, service_id), "datagora: no valid order"
    else:
        a: uint256 = self._escrow_a[escrow]
        assert a != 0, "datagora: no such escrow"
        assert (a >> 224) & 255 == convert(ESCROW_LOCKED, uint256), "datagora: escrow not locked"
        assert block.timestamp <= (a >> 160) & U64, "datagora: escrow expired"
        b: uint256 = self._escrow_b[escrow]
        assert b >> 192 == 0, "datagora: escrow already used"
        assert self._escrow_terms[escrow] == keccak256(abi_encode(consumer, dataset, algorithm, params)), "datagora: escrow is for another job"
        # The escrow was locked while the dataset served the consumer; it still must.
        assert staticcall IDataNFT(DATA_NFT).may_use(dataset, consumer), "datagora: dataset not active for the consumer"
        self._escrow_b[escrow] = b | (job << 192)
        self.job_escrow[job] = escrow
    status: uint8 = STATUS_PENDING
    if self._trusted[dataset][algorithm] == tag:
        status = STATUS_APPROVED
    self.job_count = job
    self.jobs[job] = Job(
        dataset=dataset, version=version, service_id=service_id, consumer=consumer,
        algorithm=algorithm, params=params, status=status, result=empty(bytes32),
    )
    log JobRecorded(job=job, dataset=dataset, consumer=consumer, version=version, service_id=service_id, algorithm=algorithm, params=params, status=status)
    return job


@external
@nonreentrant
def decide(job: uint256, approved: bool, reason: String[256]):
    """
    @notice The owner's review of a pending job.
    """
    dataset: uint256 = self.jobs[job].dataset
    assert dataset != 0, "datagora: no such job"
    self._check_operator(dataset)
    assert self.jobs[job].status == STATUS_PENDING, "datagora: job not pending"
    self.jobs[job].status = STATUS_APPROVED if approved else STATUS_DENIED
    log JobDecided(job=job, dataset=dataset, approved=approved, reason=reason)
    if not approved:
        self._refund_job(job, REFUND_DENIED)


@external
@nonreentrant
def complete(job: uint256, succeeded: bool, result: bytes32, epsilon_milli: uint256, note: String[256]):
    """
    @notice Settle an approved job: the hash of its (encrypted) result, or its failure.
    """
    dataset: uint256 = self.jobs[job].dataset
    assert dataset != 0, "datagora: no such job"
    self._check_operator(dataset)
    assert self.jobs[job].status == STATUS_APPROVED, "datagora: job not approved"
    assert not succeeded or result != empty(bytes32), "datagora: empty result hash"
    self.jobs[job].status = STATUS_SUCCEEDED if succeeded else STATUS_FAILED
    self.jobs[job].result = result
    log JobCompleted(job=job, dataset=dataset, succeeded=succeeded, result=result, epsilon_milli=epsilon_milli, note=note)
    escrow: uint256 = self.job_escrow[job]
    if escrow == 0:
        return
    if not succeeded:
        self._refund(escrow, job, REFUND_FAILED)
        return
    a: uint256 = self._escrow_a[escrow]
    if block.timestamp > (a >> 160) & U64:
        # The result came after the deadline: the consumer is refunded, whatever it says.
        self._refund(escrow, job, REFUND_TIMED_OUT)
        return
    self._escrow_a[escrow] = (a & ~(255 << 224)) | (convert(ESCROW_PAID, uint256) << 224)
    amount: uint256 = self._escrow_b[escrow] & U128
    payee: address = staticcall IDataNFT(DATA_NFT).controller(dataset)
    log EscrowPaid(escrow=escrow, job=job, payee=payee, amount=amount, result=result)
    assert extcall IERC20(CURRENCY).transfer(payee, amount, default_return_value=True), "datagora: payment failed"


# ------------------------------------------------------------------ escrow


@internal
def _refund(escrow: uint256, job: uint256, reason: uint8):
    """Return a locked escrow to its consumer (state first, then the transfer)."""
    a: uint256 = self._escrow_a[escrow]
    assert (a >> 224) & 255 == convert(ESCROW_LOCKED, uint256), "datagora: escrow not locked"
    self._escrow_a[escrow] = (a & ~(255 << 224)) | (convert(ESCROW_REFUNDED, uint256) << 224)
    consumer: address = convert(a & convert(max_value(uint160), uint256), address)
    amount: uint256 = self._escrow_b[escrow] & U128
    log EscrowRefunded(escrow=escrow, job=job, consumer=consumer, amount=amount, reason=reason)
    assert extcall IERC20(CURRENCY).transfer(consumer, amount, default_return_value=True), "datagora: payment failed"


@internal
def _refund_job(job: uint256, reason: uint8):
    escrow: uint256 = self.job_escrow[job]
    if escrow != 0:
        self._refund(escrow, job, reason)


@external
def set_job_terms(dataset: uint256, price: uint256, timeout: uint256):
    """
    @notice Sell jobs on `dataset` one by one through the escrow: `price` in the
            market currency per job (0: jobs are paid by orders only), and
            `timeout` seconds within which a job must be settled, after which
            its consumer may reclaim the money. Applies to later locks only.
            Controller only.
    """
    self._check_controller(dataset)
    assert price <= U128, "datagora: bad amount"
    if price != 0:
        assert timeout != 0, "datagora: zero timeout"
        assert timeout <= MAX_JOB_TIMEOUT, "datagora: timeout too far"
    self._job_terms[dataset] = price | (timeout << 128)
    log JobTermsChanged(dataset=dataset, price=price, timeout=timeout)


@external
@view
def job_terms(dataset: uint256) -> (uint256, uint256):
    """
    @notice The per-job price (0: none) and the escrow's timeout in seconds.
    """
    t: uint256 = self._job_terms[dataset]
    return t & U128, t >> 128


@external
@nonreentrant
def lock(dataset: uint256, algorithm: bytes32, params: bytes32, max_price: uint256, consumer_key: Bytes[MAX_CONSUMER_KEY]) -> uint256:
    """
    @notice Pay for one job in advance: the per-job price (at most `max_price`)
            moves from you to this contract (approve it first) and waits for
            the job running `algorithm` with `params` on `dataset`. Refused
            before any token moves unless the dataset is active and you may buy
            it. `consumer_key` is your public re-encryption key (results are
            sealed to it). Give the lock's transaction hash to the compute node.
    @return The escrow id.
    """
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    assert dataset <= U64, "datagora: no such dataset"
    t: uint256 = self._job_terms[dataset]
    price: uint256 = t & U128
    assert price != 0, "datagora: no per-job price"
    assert price <= max_price, "datagora: price above maximum"
    # Reverts unless the dataset is active and msg.sender may buy it.
    controller: address = empty(address)
    token: address = empty(address)
    controller, token = staticcall IDataNFT(DATA_NFT).market_info(dataset, msg.sender)
    deadline: uint256 = block.timestamp + (t >> 128)
    escrow: uint256 = self.escrow_count + 1
    self.escrow_count = escrow
    self._escrow_a[escrow] = convert(msg.sender, uint256) | (deadline << 160) | (convert(ESCROW_LOCKED, uint256) << 224)
    self._escrow_b[escrow] = price | (dataset << 128)
    self._escrow_terms[escrow] = keccak256(abi_encode(msg.sender, dataset, algorithm, params))
    log EscrowLocked(escrow=escrow, dataset=dataset, consumer=msg.sender, amount=price, deadline=deadline, algorithm=algorithm, params=params, consumer_key=consumer_key)
    assert extcall IERC20(CURRENCY).transferFrom(msg.sender, self, price, default_return_value=True), "datagora: payment failed"
    return escrow


@external
@view
def escrow(escrow_: uint256) -> (address, uint256, uint256, uint256, uint256, uint8):
    """
    @notice (consumer, dataset, amount, deadline, job, state): state 1 locked,
            2 paid, 3 refunded; job 0 while no job has used it.
    """
    a: uint256 = self._escrow_a[escrow_]
    b: uint256 = self._escrow_b[escrow_]
    return (
        convert(a & convert(max_value(uint160), uint256), address),
        (b >> 128) & U64,
        b & U128,
        (a >> 160) & U64,
        b >> 192,
        convert((a >> 224) & 255, uint8),
    )


@external
@nonreentrant
def cancel(job: uint256):
    """
    @notice Cancel a job before it is settled; its escrow (if any) goes back to
            the consumer. The consumer may cancel while the job waits for
            review; the controller or an operator at any time before it is
            settled (a queued or running job the node gives up).
    """
    dataset: uint256 = self.jobs[job].dataset
    assert dataset != 0, "datagora: no such job"
    status: uint8 = self.jobs[job].status
    if msg.sender == self.jobs[job].consumer and status == STATUS_PENDING:
        pass
    else:
        self._check_operator(dataset)
        assert status == STATUS_PENDING or status == STATUS_APPROVED, "datagora: job not pending or approved"
    self.jobs[job].status = STATUS_CANCELLED
    log JobCancelled(job=job, dataset=dataset, by=msg.sender)
    self._refund_job(job, REFUND_CANCELLED)


@external
@nonreentrant
def reclaim(escrow_: uint256):
    """
    @notice Take back a locked escrow: its consumer, at any time while no job
            uses it; anyone (the money goes to the consumer) once its deadline
            passed without the job being settled, which cancels that job.
    """
    a: uint256 = self._escrow_a[escrow_]
    assert a != 0, "datagora: no such escrow"
    job: uint256 = self._escrow_b[escrow_] >> 192
    if job == 0:
        if block.timestamp <= (a >> 160) & U64:
            assert msg.sender == convert(a & convert(max_value(uint160), uint256), address), "datagora: only the consumer before the deadline"
        self._refund(escrow_, 0, REFUND_UNUSED)
        return
    assert block.timestamp > (a >> 160) & U64, "datagora: escrow deadline not reached"
    self.jobs[job].status = STATUS_CANCELLED
    log JobCancelled(job=job, dataset=self.jobs[job].dataset, by=msg.sender)
    self._refund(escrow_, job, REFUND_TIMED_OUT)
