// SPDX-License-Identifier: MIT
// A minimal ERC-20 token for drainguard's end-to-end tests against a local
// node: it emits the same `Transfer` and `Approval` events as a real token
// (USDT, USDC), so a watcher decodes it exactly as it would decode them.
// Six decimals, like USDT and USDC, so amounts in tests read as dollars.
pragma solidity ^0.8.20;

contract TestToken {
    string public constant name = "drainguard Test USD";
    string public constant symbol = "TUSD";
    uint8 public constant decimals = 6;
    /// One billion whole tokens, in base units.
    uint256 public constant totalSupply = 1_000_000_000 * 10 ** 6;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    /// Mints the whole supply to the deployer, logged as a transfer from
    /// the zero address as ERC-20 mints conventionally are. No arguments,
    /// so a test deploys the bytecode as it is, with nothing to encode.
    constructor() {
        balanceOf[msg.sender] = totalSupply;
        emit Transfer(address(0), msg.sender, totalSupply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    /// Spends an allowance; an allowance of type(uint256).max is treated as
    /// unlimited and left as it is, which is the approval drainers ask for.
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= value, "TestToken: allowance exceeded");
            allowance[from][msg.sender] = allowed - value;
        }
        _move(from, to, value);
        return true;
    }

    function _move(address from, address to, uint256 value) private {
        require(to != address(0), "TestToken: transfer to the zero address");
        uint256 held = balanceOf[from];
        require(held >= value, "TestToken: balance exceeded");
        balanceOf[from] = held - value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
